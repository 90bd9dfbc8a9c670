"""``python -m companion``: runs :func:`companion.cli.main` (see its ``--help``).

Importing this module (as the API reference does) runs nothing.
"""

import sys

from companion.cli import main

if __name__ == "__main__":
    sys.exit(main())
