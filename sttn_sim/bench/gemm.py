"""Benchmark of the packed ternary GEMM against numpy float32 matmul, same run.

Shapes are ResNet-18's 3x3 convolutions as im2col GEMMs ``M x K x N`` (C_out x
9*C_in x output pixels for one 224x224 image).  For each shape:

* ``ternary_ms``: median time of :func:`~sttn_sim.kernels.gemm.ternary_gemm` with both
  operands pre-packed (:class:`~sttn_sim.kernels.gemm.GemmWeights`,
  :class:`~sttn_sim.kernels.gemm.GemmColumns`), output allocated by the call as in
  normal use;
* ``pack_act_ms``: median time to pack the int8 activation codes ``[N, K]`` into the
  kernel layout (done per inference); ``pack_weights_ms``: the same for the weights
  (done once at model load);
* ``numpy_f32_ms``: median time of ``A_f32 @ BT_f32`` (``BT`` pre-transposed to
  ``[K, N]``, C-contiguous), the float baseline;
* GMAC/s = ``M*K*N / time`` and ``ratio = numpy_f32_ms / ternary_ms``.

Ternary and numpy runs alternate in ``rounds`` blocks of ``repeats / rounds`` timed
calls, each block after a short idle pause and at least :data:`WARMUP_SECONDS` of warm-up
(:func:`~sttn_sim.bench.timing.interleaved_medians`), so both see the same machine
load.  Before timing, the ternary result is checked against the float32 product
(exact: every partial sum is an integer of magnitude at most K < 2**24).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..kernels.gemm import prepack_gemm_columns, prepack_gemm_weights, ternary_gemm
from .timing import interleaved_medians, median_time

#: (name, M, K, N): ResNet-18 3x3 convolutions of stages 1-4 as im2col GEMMs
RESNET18_SHAPES = (
    ("layer1 3x3 64", 64, 576, 3136),
    ("layer2 3x3 128", 128, 1152, 784),
    ("layer3 3x3 256", 256, 2304, 196),
    ("layer4 3x3 512", 512, 4608, 49),
)

#: the columns of :func:`benchmark_gemm`'s table, in order
GEMM_COLUMNS = ("shape", "M", "K", "N", "ternary_ms", "ternary_gmacs", "pack_act_ms", "pack_weights_ms",
                "numpy_f32_ms", "numpy_f32_gmacs", "ratio")


#: each block of timed calls follows at least this much warm-up (both functions alike:
#: see :func:`~sttn_sim.bench.timing.timed_calls`)
WARMUP_SECONDS = 0.03


def random_codes(rng: np.random.Generator, shape: tuple[int, ...], density: float = 2 / 3) -> np.ndarray:
    """int8 ternary codes: non-zero with probability ``density``, then ±1 equally likely."""
    nonzero = rng.random(shape) < density
    sign = rng.choice(np.array([-1, 1], np.int8), size=shape)
    return np.where(nonzero, sign, 0).astype(np.int8)


def benchmark_gemm(repeats: int = 30, warmup: int = 3, rounds: int = 3, shapes=RESNET18_SHAPES,
                   density: float = 2 / 3, seed: int = 0) -> pd.DataFrame:
    """Time the packed ternary GEMM and numpy float32 matmul on ``shapes``.

    Returns a DataFrame, one row per shape, with :data:`GEMM_COLUMNS` (see the module
    docstring).  ``density`` is the fraction of non-zero codes (the kernel's speed does
    not depend on it).  Raises AssertionError if the ternary product differs from the
    float32 one.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for name, m, k, n in shapes:
        a = random_codes(rng, (m, k), density)
        b = random_codes(rng, (n, k), density)
        a_f32 = a.astype(np.float32)
        bt_f32 = np.ascontiguousarray(b.T.astype(np.float32))
        weights = prepack_gemm_weights(a)
        columns = prepack_gemm_columns(b)
        if not np.array_equal(ternary_gemm(weights, columns), (a_f32 @ bt_f32).astype(np.int32)):
            raise AssertionError(f"ternary GEMM result differs from float32 matmul for {name}")

        medians = interleaved_medians({"ternary": lambda: ternary_gemm(weights, columns),
                                       "numpy": lambda: a_f32 @ bt_f32},
                                      repeats, rounds, warmup, settle=0.2, warmup_seconds=WARMUP_SECONDS)
        pack_repeats = max(3, repeats // 3)
        time.sleep(0.2)
        t_pack_b = median_time(lambda: prepack_gemm_columns(b), pack_repeats, warmup=0, settle=0.0)
        t_pack_a = median_time(lambda: prepack_gemm_weights(a), pack_repeats, warmup=0, settle=0.0)
        t_tern, t_np = medians["ternary"], medians["numpy"]
        macs = m * k * n
        rows.append({
            "shape": name, "M": m, "K": k, "N": n,
            "ternary_ms": t_tern * 1e3,
            "ternary_gmacs": macs / t_tern / 1e9,
            "pack_act_ms": t_pack_b * 1e3,
            "pack_weights_ms": t_pack_a * 1e3,
            "numpy_f32_ms": t_np * 1e3,
            "numpy_f32_gmacs": macs / t_np / 1e9,
            "ratio": t_np / t_tern,
        })
    return pd.DataFrame(rows, columns=list(GEMM_COLUMNS))


__all__ = ["RESNET18_SHAPES", "GEMM_COLUMNS", "random_codes", "benchmark_gemm"]
