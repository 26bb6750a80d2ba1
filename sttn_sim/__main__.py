"""``python -m sttn_sim COMMAND …``: the library's commands (``verify``, ``info``, ``bench``);
the ``sttn`` console command (:mod:`analysis.cli`) has these and the application's."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
