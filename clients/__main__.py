"""`python -m clients ...`: the command-line interface (see clients.cli)."""

import sys

from clients.cli import main

sys.exit(main())
