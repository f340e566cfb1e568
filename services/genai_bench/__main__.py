"""`python -m genai_bench ...` is `genai bench ...`."""

import sys

from genai_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
