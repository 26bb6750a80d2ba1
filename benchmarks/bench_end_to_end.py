"""Full benchmark: ``python benchmarks/bench_end_to_end.py [--json]``.

Same as ``python -m sttn_sim.bench``: packed ternary GEMM against numpy float32 GEMM,
the full-width STTN ResNet-18 at 224x224 (batch 1 and 8) against PyTorch when it is
installed, and the cost of recording statistics.  For a fair numpy baseline run with
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``.
"""

import sys

from sttn_sim.bench import main

if __name__ == "__main__":
    sys.exit(main())
