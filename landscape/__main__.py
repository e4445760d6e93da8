"""``python -m landscape``: the command line (see :mod:`landscape.cli`)."""

import sys

from landscape.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
