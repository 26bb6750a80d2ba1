"""analysis.baselines and analysis.sweeps against hand values and independent computations."""

import numpy as np
import pytest

from analysis.baselines import baseline_table, layer_weights, matched_sparsity
from analysis.sweeps import delta_sweep, sttn_sweep_points, sweep_arrays
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.quantizers import hard_threshold, quantization_error, sparsity_ternarize
from sttn_sim.stats import StatisticsUnavailable, learned_intervals

# Same tiny layer as tests/test_stats_weights.py:
W1 = np.array([[0.5, -0.5, 0.25, 0.75], [-0.25, -0.5, 0.5, 0.125]], np.float32)
W2 = np.array([[0.25, 0.5, -0.25, 0.5], [-0.75, 0.5, 0.5, -0.5]], np.float32)
# w = (W1+W2)/2 = [[0.375, 0, 0, 0.625], [-0.5, 0, 0.5, -0.1875]]
# STTN codes     = [[1, 0, 0, 1], [-1, 0, 1, 0]],  alpha = [0.4375, 0.453125]


def tiny_model():
    return Model("tiny", (4,), [Layer("fc1", "sttn_linear", ["input"], {}, {"weight1": W1, "weight2": W2})], "latent")


def rows_of(table, method, granularity):
    return table[(table["method"] == method) & (table["granularity"] == granularity)].iloc[0]


def test_hand_values_sttn_and_twn():
    t = baseline_table(tiny_model())
    sttn = rows_of(t, "sttn", "channel")
    # STTN in w units: alpha_o * t. Row 0: [0.4375,0,0,0.4375] vs [0.375,0,0,0.625]:
    #   0.0625^2 + 0.1875^2 = 0.00390625 + 0.03515625 = 0.0390625
    # Row 1: [-0.453125,0,0.453125,0] vs [-0.5,0,0.5,-0.1875]:
    #   2 * 0.046875^2 + 0.1875^2 = 0.00439453125 + 0.03515625 = 0.03955078125
    assert sttn["l2"] == 0.0390625 + 0.03955078125
    # ||w||^2 = 0.140625 + 0.390625 + 0.25 + 0.25 + 0.03515625 = 1.06640625
    assert sttn["l2_rel"] == pytest.approx((0.0390625 + 0.03955078125) / 1.06640625, rel=1e-15)
    assert sttn["sparsity"] == 0.5 and sttn["agreement"] == 1.0
    # best scale for STTN's codes: mean |w| over the non-zeros = 0.5 in both rows:
    #   row 0: 2 * 0.125^2 = 0.03125; row 1: 0.1875^2 = 0.03515625
    assert rows_of(t, "sttn_rescaled", "channel")["l2"] == 0.03125 + 0.03515625
    # TWN per tensor: mean|w| = 2.1875/8 = 0.2734375, delta = 0.7 * that = 0.19140625 ->
    # keeps 0.375, 0.625, 0.5, 0.5 (the STTN codes), alpha = 2/4 = 0.5 -> same l2 as rescaled
    twn = rows_of(t, "twn", "tensor")
    assert twn["delta"] == pytest.approx(0.19140625, rel=1e-15) and twn["delta_rel"] == pytest.approx(0.7)
    assert twn["l2"] == 0.03125 + 0.03515625 and twn["agreement"] == 1.0 and twn["sparsity"] == 0.5
    assert twn["scale_mean"] == 0.5


def independent(w, method, granularity):
    """Codes and dequantized weights computed with plain loops / formulas."""
    rows = w.reshape(1, -1) if granularity == "tensor" else w.reshape(w.shape[0], -1)
    codes, w_hat = np.zeros_like(rows, dtype=int), np.zeros_like(rows)
    for r, row in enumerate(rows):
        m = np.abs(row)
        if method == "twn":
            d = 0.7 * m.mean()
        elif method == "absmean":
            d = 0.5 * m.mean()
        elif method == "ttq":
            d = 0.05 * m.max()
        elif method == "optimal":  # brute force over k: the top-k magnitudes, alpha = S_k / k
            srt = np.sort(m)[::-1]
            best = min(range(1, m.size + 1), key=lambda k: (np.sum(row ** 2) - srt[:k].sum() ** 2 / k, k))
            d = (srt[best - 1] + (srt[best] if best < m.size else 0.0)) / 2
        c = np.array([1 if v > d else -1 if v < -d else 0 for v in row])
        codes[r] = c
        if method == "ttq":
            wp = row[c == 1].mean() if np.any(c == 1) else 0.0
            wn = -row[c == -1].mean() if np.any(c == -1) else 0.0
            w_hat[r] = np.where(c == 1, wp, np.where(c == -1, -wn, 0.0))
        else:
            alpha = m[c != 0].mean() if np.any(c != 0) else 0.0
            w_hat[r] = alpha * c
    return codes.reshape(w.shape), w_hat.reshape(w.shape)


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_baselines_against_independent_computations(granularity):
    rng = np.random.default_rng(11)
    w1 = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    w2 = rng.uniform(-1, 1, (4, 3, 3, 3)).astype(np.float32)
    model = Model("t", (3, 5, 5), [Layer("conv", "sttn_conv", ["input"], {"stride": 1, "padding": 1},
                                         {"weight1": w1, "weight2": w2})], "latent")
    table = baseline_table(model)
    w, sttn = layer_weights(model["conv"])
    np.testing.assert_array_equal(w, (np.clip(w1.astype(np.float64), -1, 1) + np.clip(w2.astype(np.float64), -1, 1)) / 2)
    for method in ("twn", "ttq", "optimal", "absmean"):
        codes, w_hat = independent(w, method, granularity)
        row = rows_of(table, method, granularity)
        diff = w - w_hat
        # float64 sums of 108 terms in a different order: rel 1e-12 is far above rounding
        assert row["l2"] == pytest.approx(np.sum(diff ** 2), rel=1e-12), method
        assert row["sparsity"] == np.mean(codes == 0), method
        assert row["agreement"] == np.mean(codes == sttn.codes), method
        cos = np.sum(w * w_hat) / np.sqrt(np.sum(w ** 2) * np.sum(w_hat ** 2))
        assert row["cosine"] == pytest.approx(cos, rel=1e-12), method
    # the matched-sparsity baseline has exactly STTN's zero count (no ties in random floats)
    matched = rows_of(table, "sparsity", granularity)
    assert matched["sparsity"] == np.mean(sttn.codes == 0)
    if granularity == "tensor":
        ref = sparsity_ternarize(w, float(np.mean(sttn.codes == 0)))
        assert np.array_equal(matched_sparsity(w, sttn.codes).codes, ref.codes)
    else:
        per_row = matched_sparsity(w, sttn.codes, granularity="channel").codes.reshape(4, -1)
        assert np.array_equal((per_row == 0).sum(axis=1), (sttn.codes.reshape(4, -1) == 0).sum(axis=1))
    # STTN's own row agrees with quantization_error on the same definitions
    own = quantization_error(w, sttn)
    assert rows_of(table, "sttn", "channel")["l2"] == pytest.approx(own["l2"], rel=1e-12)


def test_fixed_delta_and_unavailable():
    t = baseline_table(tiny_model(), fixed_delta_rel=1.0, granularities="tensor")
    fixed = rows_of(t, "fixed", "tensor")
    # delta = 1.0 * mean|w| = 0.2734375: same codes as TWN here
    assert fixed["delta"] == 0.2734375 and fixed["sparsity"] == 0.5
    from sttn_sim.synthetic import synthetic_model

    with pytest.raises(StatisticsUnavailable):
        baseline_table(fold(synthetic_model("ternary_mlp")))


def test_sweep_matches_direct_quantization():
    rng = np.random.default_rng(5)
    w1 = rng.uniform(-1, 1, (3, 20)).astype(np.float32)
    w2 = rng.uniform(-1, 1, (3, 20)).astype(np.float32)
    model = Model("t", (20,), [Layer("fc", "sttn_linear", ["input"], {}, {"weight1": w1, "weight2": w2})], "latent")
    w, sttn = layer_weights(model["fc"])
    ratios = np.array([0.0, 0.3, 0.5, 0.7, 1.0, 1.7, 5.0])
    for granularity in ("tensor", "channel"):
        res = sweep_arrays(w, sttn.codes, ratios, granularity)
        rows = w.reshape(1, -1) if granularity == "tensor" else w
        for i, r in enumerate(ratios):
            d = r * np.abs(rows).mean(axis=1)
            tw = hard_threshold(w, d if granularity == "channel" else float(d[0]), granularity=granularity)
            err = quantization_error(w, tw)
            assert res["sparsity"][i] == tw.sparsity
            assert res["l2"][i] == pytest.approx(err["l2"], rel=1e-9, abs=1e-12)
            assert res["cosine"][i] == pytest.approx(err["cosine"], rel=1e-9, abs=1e-12)
            assert res["agreement"][i] == np.mean(tw.codes == sttn.codes)
    table = delta_sweep(model, ratios=[0.5, 0.7])
    base = baseline_table(model, granularities="tensor")
    # the sweep at 0.7 / 0.5 is TWN / absmean
    assert table.iloc[1]["l2"] == pytest.approx(rows_of(base, "twn", "tensor")["l2"], rel=1e-9)
    assert table.iloc[0]["l2"] == pytest.approx(rows_of(base, "absmean", "tensor")["l2"], rel=1e-9)
    points = sttn_sweep_points(model).iloc[0]
    assert points["ratio"] == learned_intervals(model).iloc[0]["eq_delta_rel"]
    assert points["l2_rel"] == pytest.approx(rows_of(base, "sttn", "channel")["l2_rel"], rel=1e-12)


def test_resnet_table_shape_and_order():
    from sttn_sim.synthetic import synthetic_model

    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    t = baseline_table(model)
    assert len(t) == 16 * (2 + 2 * 5)
    assert t["layer"].cat.ordered and list(t["layer"].cat.categories) == [l.name for l in model.ternary_layers()]
    # optimal delta (L2) is never worse than any other hard threshold at the same granularity
    for (layer, gran), g in t[~t["method"].str.startswith("sttn")].groupby(["layer", "granularity"], observed=True):
        assert g.set_index("method")["l2"]["optimal"] <= g["l2"].min() + 1e-9
    s = delta_sweep(model, granularity="channel")
    assert len(s) == 16 * 81 and (np.diff(s[s["layer"] == "features.4.conv1"]["sparsity"]) >= 0).all()
