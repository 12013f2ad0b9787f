"""``python -m hra.bench.foundation``: see the package's docstring, or ``--help``."""

import sys

from hra.bench.foundation.cli import main

if __name__ == "__main__":
    sys.exit(main())
