"""Entry point of ``python -m p2plog``."""

import sys

from p2plog.cli import main

sys.exit(main())
