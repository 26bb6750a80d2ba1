"""sttn_sim.stats.weights: counts, sparsity, scales and sizes against hand-computed values.

All latent values are dyadic fractions (exact in binary), so sums are exact and the hand
numbers are compared with ``==`` or ``pytest.approx(rel=1e-15)``.
"""

import numpy as np
import pandas as pd
import pytest

from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.stats import channel_weight_statistics, weight_statistics

# Two output channels, four weights each.
W1 = np.array([[0.5, -0.5, 0.25, 0.75], [-0.25, -0.5, 0.5, 0.125]], np.float32)
W2 = np.array([[0.25, 0.5, -0.25, 0.5], [-0.75, 0.5, 0.5, -0.5]], np.float32)
# Codes t = (sign W1 + sign W2) / 2:
#   row 0: (+,+)->+1, (-,+)->0, (+,-)->0, (+,+)->+1  = [ 1, 0, 0, 1]
#   row 1: (-,-)->-1, (-,+)->0, (+,+)->+1, (+,-)->0  = [-1, 0, 1, 0]
# alpha_o = (sum|W1_o| + sum|W2_o|) / (2 n), n = 4:
#   row 0: (0.5+0.5+0.25+0.75 + 0.25+0.5+0.25+0.5) / 8 = 3.5 / 8   = 0.4375   -> s_0 = 0.875
#   row 1: (0.25+0.5+0.5+0.125 + 0.75+0.5+0.5+0.5) / 8 = 3.625 / 8 = 0.453125 -> s_1 = 0.90625


def tiny_model() -> Model:
    layer = Layer("fc1", "sttn_linear", ["input"], {}, {"weight1": W1, "weight2": W2})
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
