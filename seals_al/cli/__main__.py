"""``python -m seals_al.cli``: the same as ``seals-al``."""

import sys

from seals_al.cli import main

sys.exit(main())
