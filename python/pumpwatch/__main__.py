"""`python -m pumpwatch ...`: the same command line as the `pumpwatch` script."""

import sys

from .cli import main

sys.exit(main())
