"""Packed ternary arithmetic kernels (Numba): packing, GEMM, 2-D convolution.

Environment (set with ``os.environ.setdefault`` *before* numba is imported, so an
explicit user setting always wins; it has no effect if numba was already imported):

* ``NUMBA_SLP_VECTORIZE=1`` -- lets LLVM's SLP vectoriser turn groups of scalar
  operations into vector code (off by default in numba).  The GEMM micro-kernel is
  written as explicit ``<8 x i64>`` vector IR and does not need it; it is set for the
  scalar helper loops and for other register-tiled kernels of the engine.

``NUMBA_CPU_FEATURES`` is left alone: the micro-kernel's explicit 512-bit vectors
already compile to zmm registers on this AVX-512 host (see ``benchmarks/`` notes).

Modules: :mod:`.packing` (bit layout, pack/unpack), :mod:`.gemm` (packed GEMM),
:mod:`.conv` (packed convolution), :mod:`.bench_gemm` (benchmark).
"""

import os

os.environ.setdefault("NUMBA_SLP_VECTORIZE", "1")

from .packing import (  # noqa: E402
    PackedTernary,
    check_ternary_codes,
    pack_ternary,
    pack_ternary_reference,
    ternary_dot,
    ternary_dot_reference,
    unpack_ternary,
    unpack_ternary_reference,
)
from .gemm import (  # noqa: E402
    TILE_M,
    TILE_N,
    GemmColumns,
    GemmWeights,
    prepack_gemm_columns,
    prepack_gemm_weights,
    ternary_gemm,
    ternary_gemm_reference,
)
from .conv import (  # noqa: E402
    ConvWeights,
    conv_output_size,
    pack_activations_nhwc,
    prepack_conv_weights,
    ternary_conv2d,
    ternary_conv2d_reference,
)

__all__ = [
    "PackedTernary",
    "check_ternary_codes",
    "pack_ternary",
    "pack_ternary_reference",
    "unpack_ternary",
    "unpack_ternary_reference",
    "ternary_dot",
    "ternary_dot_reference",
    "TILE_M",
    "TILE_N",
    "GemmWeights",
    "GemmColumns",
    "prepack_gemm_weights",
    "prepack_gemm_columns",
    "ternary_gemm",
    "ternary_gemm_reference",
    "ConvWeights",
    "conv_output_size",
    "pack_activations_nhwc",
    "prepack_conv_weights",
    "ternary_conv2d",
    "ternary_conv2d_reference",
]
