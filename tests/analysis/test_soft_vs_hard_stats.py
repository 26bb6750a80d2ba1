"""The significance columns of analysis.soft_vs_hard against closed-form Student t
results on a tiny fixed table (no scipy on the expected side).

Closed forms of the Student t CDF used here (two-sided p = 2·(1 − F(|t|))):

* ν = 2: F(t) = 1/2 + t / (2·sqrt(2 + t²)), so p = 1 − |t| / sqrt(2 + t²) and the
  quantile t_q = u·sqrt(2 / (1 − u²)) with u = 2q − 1;
* ν = 4: F(t) = 1/2 + (3/8)·(t / sqrt(1 + t²/4))·(1 − t² / (12·(1 + t²/4))).

The accuracies are decimal numbers (not exact binary fractions) and scipy evaluates the
t distribution with special functions accurate to ~1e-14, so floats are compared with
rel=1e-9: far above both, far below any mistake in a formula (which moves the 2nd digit).
"""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import soft_vs_hard as svh

TOL = dict(rel=1e-9)

# seeds 0, 1, 2; TWN − STTN per seed: d = (0.07, 0.01, 0.01)
STTN = [0.90, 0.92, 0.94]
TWN = [0.97, 0.93, 0.95]


def runs_table():
    rows = [{"method": m, "seed": s, "test_accuracy": a} for m, accs in (("sttn", STTN), ("twn", TWN))
            for s, a in enumerate(accs)]
    return pd.DataFrame(rows[::-1])  # reversed: pairing must go by seed, not by row order


def test_paired_t_test_by_hand():
    # mean d = 0.03, s_d = sqrt((0.04² + 0.02² + 0.02²) / 2) = sqrt(0.0012), t = 0.03 / (s_d / √3) = 1.5
    t, p = svh.paired_t_test(TWN, STTN)
    assert t == pytest.approx(1.5, **TOL)
    assert p == pytest.approx(1 - 1.5 / math.sqrt(2 + 1.5**2), **TOL)  # ν = 2: 0.27239...


def test_welch_t_test_by_hand():
    # means 0.95 and 0.92, both sample variances 0.0004, n = 3:
    # t = 0.03 / sqrt(2 · 0.0004 / 3); Welch–Satterthwaite ν = (2a)² / (2a² / 2) = 4 for a = 0.0004/3
    t, p = svh.welch_t_test(TWN, STTN)
    t_hand = 0.03 / math.sqrt(2 * 0.0004 / 3)
    assert t == pytest.approx(t_hand, **TOL)
    c = 1 + t_hand**2 / 4
    cdf = 0.5 + 3 / 8 * (t_hand / math.sqrt(c)) * (1 - t_hand**2 / (12 * c))
    assert p == pytest.approx(2 * (1 - cdf), **TOL)


def test_confidence_interval_by_hand():
    # STTN: mean 0.92, s = 0.02, n = 3, ν = 2: t_0.975 = 0.95·sqrt(2 / (1 − 0.95²)) = 4.3027...
    low, high = svh.mean_confidence_interval(STTN, 0.95)
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * 0.02 / math.sqrt(3)
    assert low == pytest.approx(0.92 - half, **TOL) and high == pytest.approx(0.92 + half, **TOL)
    # a 50 % interval: u = 0.5, t_0.75 = 0.5·sqrt(2 / 0.75)
    low50, high50 = svh.mean_confidence_interval(STTN, 0.5)
    assert high50 - low50 == pytest.approx(2 * 0.5 * math.sqrt(2 / 0.75) * 0.02 / math.sqrt(3), **TOL)


def test_significance_table_pairs_by_seed():
    sig = svh.significance(runs_table()).set_index("method")
    assert list(sig.index) == ["twn", "sttn"]
    twn, sttn = sig.loc["twn"], sig.loc["sttn"]
    assert twn["t_paired_vs_sttn"] == pytest.approx(1.5, **TOL) and twn["pairs_vs_sttn"] == 3
    assert twn["p_welch_vs_sttn"] == pytest.approx(svh.welch_t_test(TWN, STTN)[1], rel=1e-15)
    for col in ("t_paired_vs_sttn", "p_paired_vs_sttn", "t_welch_vs_sttn", "p_welch_vs_sttn"):
        assert np.isnan(sttn[col])  # the reference is not tested against itself
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * 0.02 / math.sqrt(3)
    assert twn["acc_ci_low"] == pytest.approx(0.95 - half, **TOL)


def test_undefined_tests_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns on zero-variance input: we must not call it then
        assert all(np.isnan(svh.paired_t_test([0.9, 0.8], [0.9, 0.8])))       # d = 0
        assert all(np.isnan(svh.paired_t_test([0.9, 0.8], [0.8, 0.7])))       # d constant (up to rounding)
        assert all(np.isnan(svh.welch_t_test([0.9, 0.9], [0.8, 0.8])))        # both constant
        # one image better on both seeds (accuracies are counts / 360): d = 1/360 up to rounding
        assert all(np.isnan(svh.paired_t_test([357 / 360, 358 / 360], [356 / 360, 357 / 360])))
        assert all(np.isnan(svh.paired_t_test([0.9], [0.8])))                 # one pair
        assert all(np.isnan(svh.mean_confidence_interval([0.9])))
        assert svh.mean_confidence_interval([0.9, 0.9, 0.9]) == (0.9, 0.9)
        # one constant side is fine for Welch: t = (0.95 − 0.9) / sqrt(0.0004 / 3), ν = 2
        t, p = svh.welch_t_test(TWN, [0.9, 0.9, 0.9])
        assert t == pytest.approx(0.05 / math.sqrt(0.0004 / 3), **TOL)
        assert p == pytest.approx(1 - t / math.sqrt(2 + t**2), **TOL)


def test_summary_and_markdown_carry_the_statistics():
    results = [{"method": r.method, "seed": r.seed, "test_accuracy": r.test_accuracy,
                "test_accuracy_float32": r.test_accuracy, "train_accuracy": 1.0, "seconds": 1.0,
                "history": [], "layers": []} for r in runs_table().itertuples()]
    comp = svh.tabulate(results, ["sttn", "twn"], [0, 1, 2], svh.Settings().as_dict(), 0.0)
    s = comp.summary.set_index("method")
    for col in ("acc_ci_low", "acc_ci_high", "t_paired_vs_sttn", "p_paired_vs_sttn", "pairs_vs_sttn",
                "t_welch_vs_sttn", "p_welch_vs_sttn"):
        assert col in s.columns
    p = 1 - 1.5 / math.sqrt(2 + 1.5**2)
    assert s.loc["twn", "p_paired_vs_sttn"] == pytest.approx(p, **TOL)
    table = svh.format_table(comp)
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * 0.02 / math.sqrt(3)
    row = next(line for line in table.splitlines() if line.startswith(f"| {svh.LABELS['twn']} |"))
    assert f"| {100 * (0.95 - half):.2f}–{100 * (0.95 + half):.2f} |" in row
    assert f"| {p:.3f} |" in row and "| +3.00 |" in row
