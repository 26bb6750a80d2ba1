"""Packed ternary arithmetic kernels (Numba): packing, GEMM, 2-D convolution.

Environment (set with ``os.environ.setdefault`` before this package imports numba, so
an explicit user setting always wins):

* ``NUMBA_SLP_VECTORIZE=1`` -- lets LLVM's SLP vectoriser turn groups of scalar
  operations into vector code (off by default in numba).  The GEMM micro-kernel is
  written as explicit ``<8 x i64>`` vector IR and does not need it (a scalar-accumulator
  version was tried: the loop vectoriser then vectorised the K loop with gathers and ran
  at ~0.3 TMAC/s); it is set for other register-tiled kernels of the engine.  Numba
  re-reads the environment (``config.reload_config``) when a compilation starts, so it
  also reaches functions compiled later even if numba was imported before this package.

``NUMBA_CPU_FEATURES`` is left alone (checked, not needed here): on this znver5 host
LLVM does not prefer 256-bit vectors -- the loop vectoriser already emits zmm code with
or without ``-prefer-256-bit`` appended to llvmlite's host feature string -- and the
micro-kernel is explicit ``<8 x i64>`` IR that compiles to zmm registers.  On Intel
AVX-512 server CPUs, whose LLVM tuning prefers 256-bit vectors, the same IR is split
into ymm pairs (still exact, slower); there set, before importing numba,
``NUMBA_CPU_FEATURES="$(python -c 'import llvmlite.binding as b;
print(b.get_host_cpu_features().flatten())'),-prefer-256-bit"`` (this changes code
generation and the cache key of every numba function in the process).

Layouts and APIs:

* :mod:`.packing` -- :class:`PackedTernary` (``planes: uint64[2, ..., ceil(K/64)]``,
  plane 0 non-zero bits, plane 1 sign bits, ``length = K``), :func:`pack_ternary`,
  :func:`unpack_ternary`, :func:`ternary_dot` and numpy ``*_reference`` versions.
* :mod:`.gemm` -- :func:`ternary_gemm` ``(A [M, K], B [N, K]) -> int32 [M, N]``,
  ``C = A @ B.T``; :func:`prepack_gemm_weights` -> ``uint64[ceil(M/5), W, 2, 5]``,
  :func:`prepack_gemm_columns` -> ``uint64[ceil(N/16), W, 2, 16]``;
  :func:`ternary_gemm_reference`.
* :mod:`.conv` -- :func:`ternary_conv2d` (int8 NCHW codes or packed NHWC input,
  int8 ``[C_out, C_in, kh, kw]`` codes or :class:`ConvWeights`) -> int32 NCHW;
  :func:`pack_activations_nhwc`, :func:`prepack_conv_weights`,
  :func:`ternary_conv2d_reference`.
* :mod:`.quantizer_stats` -- :class:`~.quantizer_stats.QuantizerAccumulator` (running
  activation statistics of one quantizer) and the kernels that add a batch to it: the
  numpy definition, a Numba pass over x and codes, and the engine's threshold + pack
  with the statistics fused in.

The GEMM benchmark against numpy float32 is :mod:`sttn_sim.bench.gemm`.

Errors: :class:`~sttn_sim.errors.ShapeError` for wrong type/dtype/rank/shape and
mismatched K or channels; :class:`~sttn_sim.errors.QuantizationError` (a ``ValueError``)
for codes outside ``{-1, 0, +1}``, with the count and the first bad index.  Every
message starts with the argument's name.

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
