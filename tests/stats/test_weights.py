"""Tests of sttn_sim.stats.weights on tiny hand-built models whose codes are set by hand.

Float expectations: fractions and sparsities are ``count / n`` of small integers; any
correct float64 computation of that rational is the same correctly rounded double, so
they are compared exactly.  The scales are dyadic (0.125 ... 2), so every sum of them is
exact in float64 and the mean differs from the hand value by at most the final
division's rounding; compared with rel=1e-15 for robustness against summation order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sttn_sim.errors import ModelError, QuantizationError
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.stats import channel_weight_statistics, layer_ternary_weights, weight_statistics
from sttn_sim.synthetic import synthetic_model

# --------------------------------------------------------------------------- the hand-made model
#
# input (3, 1, 1) -> zeta: conv 1x1, 3 -> 2 -> act -> flat (2) -> alpha: 2 -> 2 -> beta: 2 -> 5 -> gamma: 5 -> 1
# Model order is zeta, alpha, beta, gamma (deliberately not alphabetical).

CODES = {
    "zeta": np.array([[1, 0, -1], [0, 0, 1]], np.int8).reshape(2, 3, 1, 1),
    "alpha": np.array([[-1, -1], [1, -1]], np.int8),
    "beta": np.array([[0, 0], [0, 1], [-1, 0], [1, 1], [0, 0]], np.int8),
    "gamma": np.array([[0, 0, 0, 0, 0]], np.int8),
}
SCALES = {
    "zeta": [0.5, 0.25],
    "alpha": [1.5, 0.75],
    "beta": [0.125, 0.25, 0.5, 1.0, 2.0],
    "gamma": [0.75],
}

#: per layer, counted by hand from CODES above: n, #-1, #0, #+1, shape string
EXPECTED = {
    "zeta": (6, 1, 3, 2, "2x3x1x1"),
    "alpha": (4, 3, 0, 1, "2x2"),
    "beta": (10, 1, 6, 3, "5x2"),
    "gamma": (5, 0, 5, 0, "1x5"),
}
#: per layer and output channel, by hand: (#-1, #0, #+1)
EXPECTED_CHANNELS = {
    "zeta": [(1, 1, 1), (0, 2, 1)],
    "alpha": [(2, 0, 0), (1, 0, 1)],
    "beta": [(0, 2, 0), (0, 1, 1), (1, 1, 0), (0, 0, 2), (0, 2, 0)],
    "gamma": [(0, 5, 0)],
}
#: ceil(2n / 8) by hand: 12 bits -> 2, 8 bits -> 1, 20 bits -> 3, 10 bits -> 2
EXPECTED_PACKED = {"zeta": 2, "alpha": 1, "beta": 3, "gamma": 2}
ORDER = ["zeta", "alpha", "beta", "gamma"]
#: parameters the layer holds in each form, by hand: folded codes + scale + bias (n + 2 c_out);
#: latent two kernels, no biases here (2n); merged one kernel, no bias (n)
EXPECTED_STORED = {
    "folded": {"zeta": 10, "alpha": 8, "beta": 20, "gamma": 7},
    "latent": {"zeta": 12, "alpha": 8, "beta": 20, "gamma": 10},
    "merged": {"zeta": 6, "alpha": 4, "beta": 10, "gamma": 5},
}
#: columns that depend on the form by definition (not on the ternary weights)
FORM_COLUMNS = ["kind", "stored_params"]
CHANNEL_COLUMNS = ["layer", "order", "channel", "n_weights", "n_neg", "n_zero", "n_pos",
                   "frac_neg", "frac_zero", "frac_pos", "sparsity", "scale"]


def _graph(ternary: dict[str, Layer]) -> list[Layer]:
    return [
        ternary["zeta"],
        Layer("act", "ternary_act", ["zeta"], {"lo": -0.5, "hi": 0.5}),
        Layer("flat", "flatten", ["act"]),
        ternary["alpha"],
        ternary["beta"],
        ternary["gamma"],
    ]


def _inputs(name: str) -> list[str]:
    return {"zeta": ["input"], "alpha": ["flat"], "beta": ["alpha"], "gamma": ["beta"]}[name]


def folded_model() -> Model:
    ternary = {}
    for name, codes in CODES.items():
        kind = "ternary_conv" if codes.ndim == 4 else "ternary_linear"
        attrs = {"stride": 1, "padding": 0, "epilogue": "affine"} if codes.ndim == 4 else {"epilogue": "affine"}
        ternary[name] = Layer(name, kind, _inputs(name), attrs,
                              {"codes": codes.copy(), "scale": np.array(SCALES[name], np.float64),
                               "bias": np.zeros(codes.shape[0])})
    return Model("hand", (3, 1, 1), _graph(ternary), form="folded")


def latent_kernels(codes: np.ndarray, scales) -> tuple[np.ndarray, np.ndarray]:
    """W1, W2 with chosen signs: +1 -> (+, +), -1 -> (-, -), 0 -> (+, -) or (-, +) alternately.

    Every |W| in channel o is s_o / 2, so (sum|W1_o| + sum|W2_o|) / n = s_o exactly."""
    mag = (np.asarray(scales, np.float64) / 2).reshape((-1,) + (1,) * (codes.ndim - 1))
    flip = (np.arange(codes.size).reshape(codes.shape) % 2 == 0)
    s1 = np.where(codes == 0, np.where(flip, 1.0, -1.0), codes)
    s2 = np.where(codes == 0, -s1, codes)
    return (s1 * mag).astype(np.float32), (s2 * mag).astype(np.float32)


def latent_model() -> Model:
    ternary = {}
    for name, codes in CODES.items():
        kind = "sttn_conv" if codes.ndim == 4 else "sttn_linear"
        attrs = {"stride": 1, "padding": 0} if codes.ndim == 4 else {}
        w1, w2 = latent_kernels(codes, SCALES[name])
        ternary[name] = Layer(name, kind, _inputs(name), attrs, {"weight1": w1, "weight2": w2})
    return Model("hand", (3, 1, 1), _graph(ternary), form="latent")


def merged_model() -> Model:
    ternary = {}
    for name, codes in CODES.items():
        kind = "ter_conv" if codes.ndim == 4 else "ter_linear"
        attrs = {"stride": 1, "padding": 0} if codes.ndim == 4 else {}
        s = np.asarray(SCALES[name]).reshape((-1,) + (1,) * (codes.ndim - 1))
        ternary[name] = Layer(name, kind, _inputs(name), attrs, {"weight": (codes * s).astype(np.float32)})
    return Model("hand", (3, 1, 1), _graph(ternary), form="merged")


FORMS = {"folded": folded_model, "latent": latent_model, "merged": merged_model}


# --------------------------------------------------------------------------- per layer


def test_latent_kernels_have_the_chosen_signs():
    """The test's own construction: the signs really encode CODES, and no latent weight is 0."""
    for name, codes in CODES.items():
        w1, w2 = latent_kernels(codes, SCALES[name])
        assert np.count_nonzero(w1 == 0) == 0 and np.count_nonzero(w2 == 0) == 0
        assert np.array_equal((np.sign(w1).astype(int) + np.sign(w2).astype(int)) // 2, codes)
        assert np.count_nonzero((codes == 0) & (np.sign(w1) == np.sign(w2))) == 0


@pytest.mark.parametrize("form", list(FORMS))
def test_weight_statistics_counts(form):
    df = weight_statistics(FORMS[form]())
    assert len(df) == 4
    assert [str(x) for x in df["layer"]] == ORDER
    assert list(df["order"]) == [0, 1, 2, 3]
    for _, row in df.iterrows():
        n, neg, zero, pos, shape = EXPECTED[row["layer"]]
        assert row["n_weights"] == n
        assert (row["n_neg"], row["n_zero"], row["n_pos"]) == (neg, zero, pos)
        assert row["shape"] == shape
        assert row["frac_neg"] == neg / n
        assert row["frac_zero"] == zero / n
        assert row["frac_pos"] == pos / n
        assert row["sparsity"] == zero / n
        assert row["packed_bytes"] == EXPECTED_PACKED[row["layer"]] == math.ceil(2 * n / 8)
        assert row["float32_bytes"] == 4 * n
        c_out = CODES[row["layer"]].shape[0]
        assert row["c_out"] == c_out
        assert row["n_params"] == n + 2 * c_out  # codes + one scale and one bias per channel
        assert row["packed_total_bytes"] == EXPECTED_PACKED[row["layer"]] + 4 * 2 * c_out
        assert row["compression"] == 4 * n / EXPECTED_PACKED[row["layer"]]  # one correctly rounded division
        assert row["stored_params"] == EXPECTED_STORED[form][row["layer"]]


def expected_scales(form: str) -> dict[str, list[float]]:
    """A merged kernel alpha*(B1+B2) keeps no scale for an all-zero channel: it is recovered as 0."""
    if form != "merged":
        return SCALES
    return {name: [s if np.any(CODES[name][o] != 0) else 0.0 for o, s in enumerate(scales)]
            for name, scales in SCALES.items()}


def test_expected_merged_scales_by_hand():
    assert expected_scales("merged") == {"zeta": [0.5, 0.25], "alpha": [1.5, 0.75],
                                         "beta": [0.0, 0.25, 0.5, 1.0, 0.0], "gamma": [0.0]}


@pytest.mark.parametrize("form", list(FORMS))
def test_weight_statistics_scales(form):
    df = weight_statistics(FORMS[form]()).set_index("layer")
    for name, scales in expected_scales(form).items():
        assert df.loc[name, "scale_mean"] == pytest.approx(sum(scales) / len(scales), rel=1e-15)
        assert df.loc[name, "scale_min"] == min(scales)
        assert df.loc[name, "scale_max"] == max(scales)


def test_weight_statistics_kinds():
    assert list(weight_statistics(folded_model())["kind"]) == ["ternary_conv", "ternary_linear"] + ["ternary_linear"] * 2
    assert list(weight_statistics(latent_model())["kind"]) == ["sttn_conv", "sttn_linear"] + ["sttn_linear"] * 2
    assert list(weight_statistics(merged_model())["kind"]) == ["ter_conv", "ter_linear"] + ["ter_linear"] * 2


def test_integer_columns_are_integers():
    df = weight_statistics(folded_model())
    for col in ("order", "c_out", "n_weights", "n_neg", "n_zero", "n_pos", "n_params", "stored_params",
                "packed_bytes", "packed_total_bytes", "float32_bytes"):
        assert df[col].dtype.kind == "i", col


@pytest.mark.parametrize("n, packed", [(1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (12, 3), (13, 4), (4096, 1024)])
def test_packed_bytes_rounding(n, packed):
    """packed = ceil(2n / 8) bytes, hand values; one ternary_linear layer of shape (1, n)."""
    codes = np.zeros((1, n), np.int8)
    codes[0, ::2] = 1
    layer = Layer("t", "ternary_linear", ["input"], {"epilogue": "affine"},
                  {"codes": codes, "scale": np.ones(1), "bias": np.zeros(1)})
    row = weight_statistics(Model("one", (n,), [layer], form="folded")).iloc[0]
    assert row["packed_bytes"] == packed
    assert row["float32_bytes"] == 4 * n
    assert row["n_pos"] == (n + 1) // 2 and row["n_zero"] == n // 2


def test_layer_column_is_in_model_order():
    df = weight_statistics(folded_model())
    assert isinstance(df["layer"].dtype, pd.CategoricalDtype)
    assert df["layer"].cat.ordered
    assert list(df["layer"].cat.categories) == ORDER
    shuffled = df.sample(frac=1.0, random_state=3)
    assert [str(x) for x in shuffled.sort_values("layer")["layer"]] == ORDER
    assert sorted(ORDER) != ORDER  # sorting by name would have broken the order


# --------------------------------------------------------------------------- per channel


@pytest.mark.parametrize("form", list(FORMS))
def test_channel_weight_statistics(form):
    df = channel_weight_statistics(FORMS[form]())
    assert set(CHANNEL_COLUMNS) <= set(df.columns)
    assert df.columns[0] == "layer"
    expected_rows = [(name, o) for name in ORDER for o in range(len(EXPECTED_CHANNELS[name]))]
    assert list(zip(map(str, df["layer"]), df["channel"])) == expected_rows
    assert list(df["layer"].cat.categories) == ORDER and df["layer"].cat.ordered
    for _, row in df.iterrows():
        neg, zero, pos = EXPECTED_CHANNELS[row["layer"]][row["channel"]]
        assert (row["n_neg"], row["n_zero"], row["n_pos"]) == (neg, zero, pos)
        n = neg + zero + pos
        assert row["sparsity"] == zero / n
        assert row["scale"] == expected_scales(form)[row["layer"]][row["channel"]]
        assert row["n_weights"] == n
        assert (row["frac_neg"], row["frac_zero"], row["frac_pos"]) == (neg / n, zero / n, pos / n)
        assert row["order"] == ORDER.index(row["layer"])


def test_channel_counts_sum_to_layer_counts():
    per_layer = weight_statistics(folded_model()).set_index("layer")
    per_channel = channel_weight_statistics(folded_model()).groupby("layer", observed=True)[["n_neg", "n_zero", "n_pos"]].sum()
    for name in ORDER:
        for col in ("n_neg", "n_zero", "n_pos"):
            assert per_channel.loc[name, col] == per_layer.loc[name, col]


# --------------------------------------------------------------------------- forms agree


def test_hand_latent_and_folded_give_identical_statistics():
    a = weight_statistics(latent_model()).drop(columns=FORM_COLUMNS)
    b = weight_statistics(folded_model()).drop(columns=FORM_COLUMNS)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(channel_weight_statistics(latent_model()),
                                  channel_weight_statistics(folded_model()), check_exact=True)


def test_fold_of_hand_latent_model_gives_the_hand_codes():
    folded = fold(latent_model())
    for name, codes in CODES.items():
        assert np.array_equal(folded[name].params["codes"], codes)
        assert np.array_equal(folded[name].params["scale"], np.array(SCALES[name]))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("sttn_resnet18", {"width": 0.125, "input_size": 32, "num_classes": 10}),
        ("plain_ternary_cnn", {}),
        ("ternary_mlp", {}),
    ],
)
def test_synthetic_latent_and_folded_give_identical_statistics(name, kwargs):
    latent = synthetic_model(name, seed=2, **kwargs)
    folded = fold(latent)
    a, b = weight_statistics(latent), weight_statistics(folded)
    assert list(a["kind"].unique()) in (["sttn_conv"], ["sttn_linear"])
    assert list(b["kind"].unique()) in (["ternary_conv"], ["ternary_linear"])
    pd.testing.assert_frame_equal(a.drop(columns=FORM_COLUMNS), b.drop(columns=FORM_COLUMNS), check_exact=True)
    pd.testing.assert_frame_equal(channel_weight_statistics(latent), channel_weight_statistics(folded), check_exact=True)
    # and the counts are those of the folded codes, counted independently
    for row in b.itertuples():
        codes = folded[str(row.layer)].params["codes"]
        assert row.n_zero == int(np.sum(codes == 0))
        assert row.n_neg + row.n_zero + row.n_pos == codes.size


# --------------------------------------------------------------------------- edge cases


def test_model_without_ternary_layers():
    m = Model("float", (4,), [Layer("fc", "linear", ["input"], {}, {"weight": np.zeros((2, 4), np.float32)})], form="float")
    assert len(weight_statistics(m)) == 0
    ch = channel_weight_statistics(m)
    assert len(ch) == 0
    assert set(CHANNEL_COLUMNS) <= set(ch.columns)


def test_layer_ternary_weights_rejects_other_kinds():
    with pytest.raises(ModelError, match="layer 'act'.*no ternary weights"):
        layer_ternary_weights(folded_model()["act"])


def test_exact_zero_latent_weight_is_reported():
    m = latent_model()
    m["beta"].params["weight2"][1, 0] = 0.0
    with pytest.raises(QuantizationError, match="layer 'beta'.*1 latent weight"):
        weight_statistics(m)


# --------------------------------------------------------------------------- hand values of a tiny layer

# Two output channels, four weights each.
TINY_W1 = np.array([[0.5, -0.5, 0.25, 0.75], [-0.25, -0.5, 0.5, 0.125]], np.float32)
TINY_W2 = np.array([[0.25, 0.5, -0.25, 0.5], [-0.75, 0.5, 0.5, -0.5]], np.float32)
# Codes t = (sign TINY_W1 + sign TINY_W2) / 2:
#   row 0: (+,+)->+1, (-,+)->0, (+,-)->0, (+,+)->+1  = [ 1, 0, 0, 1]
#   row 1: (-,-)->-1, (-,+)->0, (+,+)->+1, (+,-)->0  = [-1, 0, 1, 0]
# alpha_o = (sum|W1_o| + sum|W2_o|) / (2 n), n = 4:
#   row 0: (0.5+0.5+0.25+0.75 + 0.25+0.5+0.25+0.5) / 8 = 3.5 / 8   = 0.4375   -> s_0 = 0.875
#   row 1: (0.25+0.5+0.5+0.125 + 0.75+0.5+0.5+0.5) / 8 = 3.625 / 8 = 0.453125 -> s_1 = 0.90625


def tiny_model() -> Model:
    layer = Layer("fc1", "sttn_linear", ["input"], {}, {"weight1": TINY_W1, "weight2": TINY_W2})
    return Model("tiny", (4,), [layer], "latent")


def test_layer_statistics_hand_values():
    df = weight_statistics(tiny_model())
    assert len(df) == 1
    r = df.iloc[0]
    assert (r["n_weights"], r["n_neg"], r["n_zero"], r["n_pos"]) == (8, 1, 4, 3)
    assert r["sparsity"] == 0.5 and r["frac_neg"] == 0.125 and r["frac_pos"] == 0.375
    assert r["scale_min"] == 0.875 and r["scale_max"] == 0.90625
    assert r["scale_mean"] == pytest.approx((0.875 + 0.90625) / 2, rel=1e-15)
    # sizes: 8 weights at 2 bits = 16 bits = 2 bytes; float32 = 32 bytes; folded stores
    # weights + one scale + one bias per channel = 8 + 2*2 = 12 parameters; the latent
    # layer stores two 8-weight kernels = 16; packed total = 2 + 4 bytes * (2 scales + 2 biases)
    assert r["packed_bytes"] == 2 and r["float32_bytes"] == 32 and r["compression"] == 16
    assert r["n_params"] == 12 and r["stored_params"] == 16 and r["packed_total_bytes"] == 18
    assert r["c_out"] == 2


def test_channel_statistics_hand_values():
    df = channel_weight_statistics(tiny_model())
    assert list(df["channel"]) == [0, 1]
    assert list(df["n_neg"]) == [0, 1] and list(df["n_zero"]) == [2, 2] and list(df["n_pos"]) == [2, 1]
    assert list(df["sparsity"]) == [0.5, 0.5]
    assert list(df["scale"]) == [0.875, 0.90625]
    assert list(df["frac_pos"]) == [0.5, 0.25]


def test_forms_agree_and_layer_column_is_ordered():
    from sttn_sim.synthetic import synthetic_model

    model = synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    folded_model = fold(model)
    latent, folded = weight_statistics(model), weight_statistics(folded_model)
    cols = ["n_neg", "n_zero", "n_pos", "packed_bytes", "n_params"]
    pd.testing.assert_frame_equal(latent[cols], folded[cols])
    assert isinstance(latent["layer"].dtype, pd.CategoricalDtype) and latent["layer"].cat.ordered
    assert list(latent["layer"].cat.categories) == [l.name for l in model.ternary_layers()]
    assert list(latent["order"]) == list(range(16))
    ch = channel_weight_statistics(folded_model)
    assert ch["layer"].cat.ordered and len(ch) == sum(l.params["codes"].shape[0] for l in folded_model.ternary_layers())
