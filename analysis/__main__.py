"""``python -m analysis``: the same as ``python -m analysis.figures``."""

import sys

from analysis.report import main

sys.exit(main())
