"""``python -m sttn_sim.bench``: see :mod:`sttn_sim.bench`."""

import sys

from .cli import main

sys.exit(main())
