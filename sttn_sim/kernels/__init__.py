"""Packed ternary arithmetic kernels (Numba): packing, GEMM, 2-D convolution.

Numba's cache (:mod:`._cache`): a cached kernel is recompiled when any ``.py`` file of
this package changes, not only its own (its micro-kernels live in other modules).

Environment (set with ``os.environ.setdefault`` before this package imports numba, so
an explicit user setting always wins):

* ``NUMBA_SLP_VECTORIZE=1`` -- lets LLVM's SLP vectoriser turn groups of scalar
  operations into vector code (off by default in numba).  The GEMM micro-kernel is
  written as explicit ``<8 x i64>`` vector IR and does not need it (a scalar-accumulator
  version was tried: the loop vectoriser then vectorised the K loop with gathers and ran
  at ~0.3 TMAC/s); it is set for other register-tiled kernels of the engine.  Numba
  re-reads the environment (``config.reload_config``) when a compilation starts, so it
  also reaches functions compiled later even if numba was imported before this package.

CPU classes (:mod:`.cpu`, :mod:`.selection`): the kernels are chosen for the target numba
compiles for -- AVX-512 with VPOPCNTDQ (popcount on zmm bit planes), AVX-512 without it
and AVX2 (int8 multiply-add on the codes with VNNI ``vpdpbusd``, else a ``vpshufb``
table lookup on pairs of codes), and a portable fallback -- and every variant is exact
(tests/kernels/).  Explicit vector IR
(``<8 x i64>``, ``<16 x float>``) is not split by LLVM's 256-bit preference on Intel
AVX-512 server CPUs (numba sets no ``min-legal-vector-width``, so 512-bit types stay
legal; checked in the assembly); only the auto-vectorised loops (threshold + pack,
epilogue, pooling) follow that preference.

Layouts and APIs:

* :mod:`.packing` -- :class:`PackedTernary` (``planes: uint64[2, ..., ceil(K/64)]``,
  plane 0 non-zero bits, plane 1 sign bits, ``length = K``), :func:`pack_ternary`,
  :func:`unpack_ternary`, :func:`ternary_dot` and numpy ``*_reference`` versions.
* :mod:`.gemm` -- :func:`ternary_gemm` ``(A [M, K], B [N, K]) -> int32 [M, N]``,
  ``C = A @ B.T``; :func:`prepack_gemm_weights`, :func:`prepack_gemm_columns` (layouts
  per kernel family, see :mod:`.gemm`); :data:`TERNARY_KERNELS`;
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

from ._cache import install as _install_cache_locators

_install_cache_locators()  # cached kernels: recompiled when any kernel source changes

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
    TERNARY_KERNELS,
    GemmColumns,
    GemmWeights,
    prepack_gemm_columns,
    prepack_gemm_weights,
    ternary_gemm,
    TernaryKernel,
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
from .cpu import CPU_CLASSES, CompileTarget, compile_target  # noqa: E402
from .selection import KernelSelectionError, KernelSet, kernel_set  # noqa: E402

__all__ = [
    "PackedTernary",
    "check_ternary_codes",
    "pack_ternary",
    "pack_ternary_reference",
    "unpack_ternary",
    "unpack_ternary_reference",
    "ternary_dot",
    "ternary_dot_reference",
    "TernaryKernel",
    "TERNARY_KERNELS",
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
    "CPU_CLASSES",
    "CompileTarget",
    "compile_target",
    "KernelSelectionError",
    "KernelSet",
    "kernel_set",
]
