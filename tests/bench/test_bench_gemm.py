"""The GEMM benchmark: columns, and the check of the ternary product against the float
one (no wall-clock assertion)."""

import numpy as np
import pytest

from sttn_sim.bench import gemm
from sttn_sim.bench.gemm import GEMM_COLUMNS, RESNET18_SHAPES, benchmark_gemm, random_codes

TINY = [("tiny", 7, 100, 20), ("one tile", 5, 64, 16)]


def test_a_tiny_run_returns_one_row_per_shape_with_every_column():
    df = benchmark_gemm(repeats=2, warmup=1, rounds=2, shapes=TINY)
    assert list(df.columns) == list(GEMM_COLUMNS)
    assert list(df["shape"]) == ["tiny", "one tile"]
    assert list(df["M"]) == [7, 5] and list(df["K"]) == [100, 64] and list(df["N"]) == [20, 16]
    timed = [c for c in GEMM_COLUMNS if c.endswith(("_ms", "_gmacs")) or c == "ratio"]
    assert (df[timed] > 0).all().all()
    np.testing.assert_allclose(df["ratio"], df["numpy_f32_ms"] / df["ternary_ms"], rtol=1e-12)  # a definition
    np.testing.assert_allclose(df["ternary_gmacs"], df["M"] * df["K"] * df["N"] / (df["ternary_ms"] * 1e6),
                               rtol=1e-12)


def test_a_wrong_ternary_product_is_refused(monkeypatch):
    real = gemm.ternary_gemm
    monkeypatch.setattr(gemm, "ternary_gemm", lambda w, c: real(w, c) + np.int32(1))
    with pytest.raises(AssertionError, match="differs from float32 matmul for tiny"):
        benchmark_gemm(repeats=1, warmup=0, rounds=1, shapes=TINY[:1])


def test_random_codes_are_ternary_with_the_asked_density():
    codes = random_codes(np.random.default_rng(0), (200, 300), density=0.25)
    assert codes.dtype == np.int8 and set(np.unique(codes)) == {-1, 0, 1}
    assert abs(np.mean(codes != 0) - 0.25) < 0.01  # 60000 draws: std 0.0018


def test_the_shapes_are_resnet18_im2col_gemms():
    # C_out x 9*C_in x (224 / 2**(stage+1))**2 output pixels, stages 1-4
    assert [(m, k, n) for _, m, k, n in RESNET18_SHAPES] == [
        (c, 9 * c, (224 // (4 * 2**i)) ** 2) for i, c in enumerate((64, 128, 256, 512))]
