"""`python -m docrelay.runner`: run the mounted code once and report how it went."""

from __future__ import annotations

import sys

from docrelay.runner.main import main

if __name__ == "__main__":
    sys.exit(main())
