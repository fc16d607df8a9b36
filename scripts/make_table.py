"""Tables and plots from run directories: the same as ``python -m flatmin.report``.

    python scripts/make_table.py outputs/multiruns/<stamp> [--format md|latex|csv] [--out DIR] [--best-on-test]
"""

import sys

from flatmin.report.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
