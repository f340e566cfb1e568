"""The adversarial tier's server limits, shared by its fixtures and tests.

A module of its own name: `from conftest import ...` would find whichever conftest
another tier put on the path first when the whole suite runs.
"""

STALL_TIMEOUT_S = 6
MAX_REQUEST_TIME_S = 10
GRACE_S = 10
RSS_GROWTH_LIMIT = 512 * 1024 * 1024
