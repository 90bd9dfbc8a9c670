"""``python -m companion``: the command line of :mod:`companion.cli`."""

import sys

from companion.cli import main

sys.exit(main())
