"""sttn_sim.stats.intervals: learned intervals against hand-computed values.

Latent values are dyadic fractions, so w = (W1+W2)/2 and every sum below is exact.
"""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.errors import ModelError, SttnError
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.stats import (
    StatisticsUnavailable,
    best_separating_delta,
    interval_samples,
    interval_statistics,
    learned_interval_classes,
    learned_intervals,
)


def latent_model(w1, w2, name="fc1") -> Model:
    w1, w2 = np.asarray(w1, np.float32), np.asarray(w2, np.float32)
    return Model("tiny", (w1.shape[1],), [Layer(name, "sttn_linear", ["input"], {}, {"weight1": w1, "weight2": w2})],
                 "latent")


# Example A (8 weights, one channel):
#  i   W1      W2      signs  code   w = (W1+W2)/2   |w|
#  1   0.75    0.625   ++     +1     0.6875          0.6875
#  2   0.75   -0.125   +-      0     0.3125          0.3125
#  3   0.5     0.125   ++     +1     0.3125          0.3125
#  4  -0.25    0.625   -+      0     0.1875          0.1875
#  5   0.375  -0.125   +-      0     0.125           0.125
#  6  -0.875  -0.75    --     -1    -0.8125          0.8125
#  7   0.125   0.0625  ++     +1     0.09375         0.09375
#  8  -0.5     0.25    -+      0    -0.125           0.125
A_W1 = [[0.75, 0.75, 0.5, -0.25, 0.375, -0.875, 0.125, -0.5]]
A_W2 = [[0.625, -0.125, 0.125, 0.625, -0.125, -0.75, 0.0625, 0.25]]


def test_example_a_hand_values():
    r = learned_intervals(latent_model(A_W1, A_W2)).iloc[0]
    assert (r["n_weights"], r["n_neg"], r["n_zero"], r["n_pos"]) == (8, 1, 4, 3)
    assert r["sparsity"] == 0.5
    # mean|w| = (0.6875+0.3125+0.3125+0.1875+0.125+0.8125+0.09375+0.125)/8 = 2.65625/8
    assert r["mean_abs_w"] == 2.65625 / 8
    # ascending |w| (class): 0.09375(nz) 0.125(z) 0.125(z) 0.1875(z) 0.3125(z) 0.3125(nz) 0.6875(nz) 0.8125(nz)
    # 4 STTN zeros -> equivalent delta = a_4 = 0.1875; hard zeros {|w| <= 0.1875} = 4 -> same sparsity
    assert r["eq_delta"] == 0.1875 and r["hard_sparsity_at_eq"] == 0.5
    assert r["eq_delta_rel"] == pytest.approx(0.1875 / (2.65625 / 8), rel=1e-15)
    # mismatches at 0.1875: weight 7 (STTN +1, |w| below) and weight 2 (STTN 0, |w| above)
    assert (r["overlap_count"], r["overlap_nonzero_below"], r["overlap_zero_above"]) == (2, 1, 1)
    assert r["overlap"] == 0.25
    # best separating delta: prefix lengths j (not splitting the 0.125 or 0.3125 runs):
    #   E(0)=0+4=4, E(1)=1+4=5, E(3)=1+2=3, E(4)=1+1=2, E(6)=2+0=2, E(7)=3, E(8)=4
    # first minimum j=4: delta = a_4 = 0.1875, upper = a_5 = 0.3125, 2 errors
    assert (r["best_delta"], r["best_delta_upper"], r["best_errors"]) == (0.1875, 0.3125, 2)
    assert r["best_error_rate"] == 0.25 and r["best_sparsity"] == 0.5
    assert r["sign_mismatches"] == 0
    # class-conditional |w| (numpy linear quantiles):
    # zero: sorted [0.125, 0.125, 0.1875, 0.3125]; median at position 1.5 = (0.125+0.1875)/2;
    #       q75 at position 2.25 = 0.1875 + 0.25*(0.3125-0.1875) = 0.21875; mean 0.75/4
    assert (r["zero_absw_min"], r["zero_absw_max"]) == (0.125, 0.3125)
    assert r["zero_absw_q50"] == 0.15625 and r["zero_absw_q75"] == 0.21875 and r["zero_absw_mean"] == 0.1875
    # pos: [0.09375, 0.3125, 0.6875] -> median 0.3125, mean 1.09375/3; neg: only 0.8125
    assert (r["pos_absw_min"], r["pos_absw_q50"], r["pos_absw_max"]) == (0.09375, 0.3125, 0.6875)
    assert r["pos_absw_mean"] == pytest.approx(1.09375 / 3, rel=1e-15)
    assert r["neg_absw_min"] == r["neg_absw_q05"] == r["neg_absw_max"] == 0.8125


# Example B (5 weights): the best separating delta differs from the equivalent one, and
# W1 = 1.5 is clamped to 1 first.
#  W1      W2      code  w
#  0.5    -0.25    0     0.125
#  0.25    0.25   +1     0.25
# -0.5    -0.25   -1    -0.375
#  1.5    -0.125   0     0.4375   ((1 - 0.125)/2 after clamping)
#  0.75    0.25   +1     0.5
B_W1 = [[0.5, 0.25, -0.5, 1.5, 0.75]]
B_W2 = [[-0.25, 0.25, -0.25, -0.125, 0.25]]


def test_example_b_best_delta_beats_equivalent_delta():
    r = learned_intervals(latent_model(B_W1, B_W2)).iloc[0]
    # ascending |w|: 0.125(z) 0.25(nz) 0.375(nz) 0.4375(z) 0.5(nz); 2 zeros -> eq delta = a_2 = 0.25
    assert r["eq_delta"] == 0.25 and r["hard_sparsity_at_eq"] == 0.4
    # mismatches at 0.25: 0.25 (nz, below) and 0.4375 (z, above)
    assert r["overlap_count"] == 2 and r["overlap"] == 0.4
    # E(0)=0+2=2, E(1)=0+1=1, E(2)=1+1=2, E(3)=2+1=3, E(4)=2+0=2, E(5)=3 -> j=1: delta 0.125, upper 0.25
    assert (r["best_delta"], r["best_delta_upper"], r["best_errors"]) == (0.125, 0.25, 1)
    assert r["best_error_rate"] == 0.2 and r["best_sparsity"] == 0.2
    assert r["zero_absw_max"] == 0.4375  # clamped: (1 - 0.125)/2, not (1.5 - 0.125)/2


def test_ties_at_the_equivalent_delta_are_reported():
    # |w| = 0.25 (zero: W1 0.75, W2 -0.25), 0.25 (+1: 0.25, 0.25), 0.5 (+1: 0.5, 0.5)
    r = learned_intervals(latent_model([[0.75, 0.25, 0.5]], [[-0.25, 0.25, 0.5]])).iloc[0]
    # one STTN zero -> eq delta a_1 = 0.25, but the hard rule zeroes both 0.25's
    assert r["eq_delta"] == 0.25 and r["sparsity"] == pytest.approx(1 / 3) and r["hard_sparsity_at_eq"] == pytest.approx(2 / 3)
    assert r["overlap_count"] == 1
    # E(0) = 0 + 1 = 1 (delta 0 keeps everything), j=1 splits the tie, E(2) = 1, E(3) = 2 -> j = 0
    assert (r["best_delta"], r["best_delta_upper"], r["best_errors"]) == (0.0, 0.25, 1)


def test_channel_granularity_matches_per_row_statistics():
    rng = np.random.default_rng(3)
    w1 = rng.uniform(-1, 1, (3, 12)).astype(np.float32)
    w2 = rng.uniform(-1, 1, (3, 12)).astype(np.float32)
    model = latent_model(w1, w2)
    per_channel = learned_intervals(model, granularity="channel")
    assert list(per_channel["channel"]) == [0, 1, 2]
    for o in range(3):
        single = learned_intervals(latent_model(w1[o:o + 1], w2[o:o + 1])).iloc[0]
        for col in ("eq_delta", "overlap", "best_delta", "best_errors", "sparsity", "zero_absw_q50"):
            assert per_channel.iloc[o][col] == single[col]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=1, max_size=14))
def test_best_separating_delta_is_the_brute_force_minimum(items):
    # magnitudes on a coarse grid (many ties); brute force over every candidate delta
    a = np.array([m / 8 for m, _ in items])
    z = np.array([zero for _, zero in items])
    best, upper, errors = best_separating_delta(a, z)
    candidates = sorted(set([0.0] + a.tolist()))
    brute = [(int(np.sum(z & (a > d)) + np.sum(~z & (a <= d))), d) for d in candidates]
    assert errors == min(e for e, _ in brute)
    assert (errors, best) == min(brute)  # smallest delta among the minima
    assert int(np.sum(z & (a > best)) + np.sum(~z & (a <= best))) == errors
    assert upper > best
    assert errors <= interval_statistics(a, np.where(z, 0, 1))["overlap_count"]


def test_interval_samples_by_class():
    s = interval_samples(latent_model(A_W1, A_W2), "fc1")
    cls = s.by_class()
    assert cls[-1].tolist() == [-0.8125]
    assert sorted(cls[0].tolist()) == [-0.125, 0.125, 0.1875, 0.3125]
    assert sorted(cls[1].tolist()) == [0.09375, 0.3125, 0.6875]
    assert s.w.shape == (1, 8) and s.codes.dtype == np.int8


def test_long_form_classes():
    df = learned_interval_classes(latent_model(A_W1, A_W2))
    assert list(df["code"]) == [-1, 0, 1] and list(df["count"]) == [1, 4, 3]
    assert df.set_index("code").loc[0, "w_min"] == -0.125 and df.set_index("code").loc[0, "max"] == 0.3125


def test_merged_and_folded_models_say_not_available():
    from sttn_sim.synthetic import synthetic_model

    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    folded = fold(model)
    with pytest.raises(StatisticsUnavailable, match="latent kernels W1, W2 are not in this model"):
        learned_intervals(folded)
    with pytest.raises(StatisticsUnavailable, match="features.4.conv1"):
        interval_samples(folded, "features.4.conv1")
    assert issubclass(StatisticsUnavailable, SttnError)
    merged = latent_model(A_W1, A_W2)
    merged.layers[0] = Layer("fc1", "ter_linear", ["input"], {}, {"weight": np.array([[0.5, 0, -0.5, 0.5]], np.float32)})
    merged.form = "merged"
    with pytest.raises(StatisticsUnavailable, match="merged layer"):
        learned_intervals(merged)


def test_unknown_and_non_ternary_layers_list_the_valid_names():
    from sttn_sim.synthetic import synthetic_model

    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    with pytest.raises(ModelError, match=r"no layer 'nope'; ternary layers: features\.4\.conv1, features\.4\.conv2"):
        interval_samples(model, "nope")
    with pytest.raises(ModelError, match="is a batchnorm layer, not a ternary layer"):
        learned_intervals(model, layers=["features.4.bn1"])
    df = learned_intervals(model)
    assert isinstance(df["layer"].dtype, pd.CategoricalDtype) and list(df["order"]) == list(range(16))
    assert (df["best_errors"] <= df["overlap_count"]).all()
