"""`python -m genai_services.bench ...` is `genai bench ...`."""

import sys

from genai_services.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
