"""`python -m namekeeper`: the same command line as the `namekeeper` script."""

import sys

from .cli import main

sys.exit(main())
