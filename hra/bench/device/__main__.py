"""``python -m hra.bench.device``: see the package's docstring, or ``--help``."""

import sys

from hra.bench.device.cli import main

if __name__ == "__main__":
    sys.exit(main())
