"""`python -m docrelay.cli`."""

import sys

from docrelay.cli import main

sys.exit(main())
