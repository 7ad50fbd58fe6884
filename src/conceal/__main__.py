"""``python -m conceal``: the same command line as ``conceal``."""

import sys

from .cli import main

sys.exit(main())
