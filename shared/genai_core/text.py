"""Scrubbing model text before it reaches a response."""

from __future__ import annotations

import re
from typing import Any

# C0/C1 control characters other than tab and newline, and UTF-16 surrogates (a JSON
# "\ud800" escape decodes to one, and protobuf cannot encode it). Constrained decoding
# lets such characters through inside JSON strings.
_UNWANTED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def scrub(text: str) -> str:
    return _UNWANTED.sub("", text)


def scrub_json(value: Any) -> Any:
    """`scrub` every string (keys too) in a parsed JSON value."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list):
        return [scrub_json(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub_json(v) for k, v in value.items()}
    return value
