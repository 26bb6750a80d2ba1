"""sttn_sim.stats.activations: the recorder against hand-computed counts, merging, thresholds."""

import numpy as np
import pandas as pd
import pytest

from sttn_sim.errors import SttnError
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.quantizers import sttn_ternarize
from sttn_sim.recording import LayerEvent
from sttn_sim.reference import run_reference
from sttn_sim.stats import ActivationRecorder, activation_thresholds, collect_activations, layer_costs

EDGES = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])  # 4 bins [e_i, e_{i+1}); below -1 underflow


def tiny_conv_model() -> Model:
    """input (4, 2, 2) -> BN (eps 0, so y = gamma*x + beta exactly) -> ternary_act -> sttn_conv 3x3 pad 1.

    BN channels: gamma = [1, -1, 0, 1], beta = [0, 0, 0.75, 0], mean 0, var 1.
    """
    bn = Layer("bn", "batchnorm", ["input"], {"eps": 0.0},
               {"weight": np.array([1, -1, 0, 1], np.float32), "bias": np.array([0, 0, 0.75, 0], np.float32),
                "running_mean": np.zeros(4, np.float32), "running_var": np.ones(4, np.float32)})
    act = Layer("act", "ternary_act", ["bn"], {"lo": -0.5, "hi": 0.5})
    rng = np.random.default_rng(7)
    w1 = np.full((1, 4, 3, 3), 0.5, np.float32)
    w2 = np.where(rng.random((1, 4, 3, 3)) < 0.5, -0.25, 0.25).astype(np.float32)
    conv = Layer("conv", "sttn_conv", ["act"], {"stride": 1, "padding": 1}, {"weight1": w1, "weight2": w2})
    return Model("tiny_conv", (4, 2, 2), [bn, act, conv], "latent")


# One image; x[c] as 2x2 maps (row-major), and y = gamma*x + beta:
X = np.array([[[[-0.75, -0.5], [0.25, 0.5]],      # ch0, gamma  1: y = -0.75 -0.5  0.25 0.5
               [[0.75, 0.1], [-0.6, 2.0]],         # ch1, gamma -1: y = -0.75 -0.1  0.6 -2.0
               [[1.0, 2.0], [3.0, 4.0]],           # ch2, gamma  0: y = 0.75 everywhere (constant +1)
               [[0.0, 0.1], [-0.1, 0.2]]]],        # ch3, gamma  1: y = 0 0.1 -0.1 0.2 (all code 0)
             np.float64)
# codes (x < -0.5 -> -1, -0.5 <= x < 0.5 -> 0, x >= 0.5 -> +1):
#   ch0: -1 0 0 +1   ch1: -1 0 +1 -1   ch2: +1 +1 +1 +1   ch3: 0 0 0 0
CODE_COUNTS = np.array([[1, 2, 1], [2, 1, 1], [0, 0, 4], [0, 4, 0]])
# histogram on EDGES: b0=[-1,-.5): -0.75, -0.75                        -> 2
#                     b1=[-.5,0):  -0.5, -0.1, -0.1                    -> 3
#                     b2=[0,.5):   0.25, 0, 0.1, 0.2                   -> 4
#                     b3=[.5,1):   0.5, 0.6, 0.75 x4                   -> 6
#                     underflow:   -2.0                                -> 1
HIST = [2, 3, 4, 6]


@pytest.mark.parametrize("form", ["latent", "folded"])
def test_recorder_hand_values(form):
    model = tiny_conv_model()
    if form == "folded":
        model = fold(model)
    rec = ActivationRecorder(EDGES, tie_eps=0.2)
    run_reference(model, X, record=False, recorder=rec)
    assert rec.layers == ["act"]
    edges, counts, under, over = rec.histogram("act")
    assert counts.tolist() == HIST and (under, over) == (1, 0) and np.array_equal(edges, EDGES)
    assert np.array_equal(rec.code_counts("act"), CODE_COUNTS)
    r = rec.layer_table().iloc[0]
    assert (r["n_neg"], r["n_zero"], r["n_pos"], r["n_values"]) == (3, 7, 6, 16)
    assert r["frac_zero"] == 7 / 16
    # exact ties: y == -0.5 (ch0) and y == 0.5 (ch0); near (|y -+0.5| <= 0.2): those two and 0.6
    assert (r["exact_ties"], r["near_ties"]) == (2, 3)
    # ch3 never leaves 0 (dead, stuck on 0); ch2 is always +1 (stuck, constant: gamma = 0)
    assert (r["dead_channels"], r["stuck_channels"], r["constant_channels"]) == (1, 2, 1)
    assert (r["y_min"], r["y_max"]) == (-2.0, 0.75)
    ch = rec.channel_table()
    assert ch["dead"].tolist() == [False, False, False, True]
    assert ch["stuck"].tolist() == [False, False, True, True]
    assert ch["stuck_code"].tolist()[2:] == [1, 0] and ch["stuck_code"].isna().tolist()[:2] == [True, True]
    assert ch["direction"].tolist() == [1, -1, 0, 1]
    assert ch["rule"].tolist()[:3] == ["+1 if x >= 0.5; -1 if x < -0.5", "+1 if x <= -0.5; -1 if x > 0.5",
                                       "constant +1"]


def test_nonzero_macs_against_loops():
    model = tiny_conv_model()
    rec = ActivationRecorder(EDGES)
    run_reference(model, X, record=False, recorder=rec)
    conv = model["conv"]
    t = sttn_ternarize(conv.params["weight1"], conv.params["weight2"]).codes[0]  # [4, 3, 3]
    codes = np.array([[-1, 0, 0, 1], [-1, 0, 1, -1], [1, 1, 1, 1], [0, 0, 0, 0]]).reshape(4, 2, 2)
    both = nz_act = 0
    for i in range(2):          # output rows (stride 1, padding 1: same size)
        for j in range(2):
            for c in range(4):
                for p in range(3):
                    for q in range(3):
                        ii, jj = i + p - 1, j + q - 1
                        if 0 <= ii < 2 and 0 <= jj < 2 and codes[c, ii, jj] != 0:
                            nz_act += 1          # x 1 output channel
                            both += int(t[c, p, q] != 0)
    m = rec.consumer_macs()["conv"]
    assert m == {"quantizer": "act", "images": 1, "macs": 4 * 36, "macs_nonzero_act": nz_act,
                 "macs_nonzero_weight": 4 * int(np.count_nonzero(t)), "macs_nonzero": both}
    cost = layer_costs(model, rec).iloc[0]
    assert cost["macs"] == 144 and cost["out_positions"] == 4 and cost["weights_per_output"] == 36
    assert cost["macs_nonzero"] == both and cost["nonzero_mac_fraction"] == both / 144
    assert cost["packed_bytes"] == 9 and cost["float32_bytes"] == 144  # 36 weights: 72 bits, 144 bytes
    assert "macs_nonzero" not in layer_costs(model).columns  # without a recorder only static columns


def test_threshold_table_latent_equals_folded():
    model = tiny_conv_model()
    a, b = activation_thresholds(model), activation_thresholds(fold(model))
    cols = ["channel", "direction", "lo", "hi", "constant", "x_plus", "x_minus", "rule"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert a["x_plus"].tolist()[:2] == [0.5, -0.5] and np.isnan(a["x_plus"].iloc[2])
    assert a["zero_band_width"].tolist()[:2] == [1.0, 1.0] and a["domain"].iloc[0] == "pre_bn"


def _batches(model, n, size=3):
    from sttn_sim.synthetic import synthetic_input

    return [synthetic_input(model, size, seed=10 + i) for i in range(n)]


def _assert_same_counts(r1: ActivationRecorder, r2: ActivationRecorder):
    assert r1.layers == r2.layers and r1.samples == r2.samples
    for layer in r1.layers:
        e1, h1, u1, o1 = r1.histogram(layer)
        e2, h2, u2, o2 = r2.histogram(layer)
        assert np.array_equal(h1, h2) and (u1, o1) == (u2, o2)
        assert np.array_equal(r1.code_counts(layer), r2.code_counts(layer))
    int_cols = ["n_values", "n_neg", "n_zero", "n_pos", "dead_channels", "stuck_channels", "exact_ties", "near_ties",
                "macs", "macs_nonzero_act", "macs_nonzero_weight", "macs_nonzero", "images"]
    pd.testing.assert_frame_equal(r1.layer_table()[int_cols], r2.layer_table()[int_cols])
    assert r1.consumer_macs() == r2.consumer_macs()


@pytest.mark.parametrize("form", ["latent", "folded"])
def test_merging_equals_recording_the_concatenated_batches(form):
    # a ternary MLP: BN is elementwise and every ternary layer sees ternary input, so each
    # image's values do not depend on the batch it is in -> counts must match exactly
    from sttn_sim.synthetic import synthetic_model

    model = synthetic_model("ternary_mlp", seed=1)
    if form == "folded":
        model = fold(model)
    b = _batches(model, 3)
    rec_a = collect_activations(model, b[:2], progress=False)
    rec_b = collect_activations(model, b[2:], progress=False)
    rec_cat = collect_activations(model, [np.concatenate(b)], progress=False)
    merged = rec_a + rec_b
    _assert_same_counts(merged, rec_cat)
    assert merged.batches == 3 and rec_cat.batches == 1
    _assert_same_counts(sum([rec_a, rec_b]), rec_cat)
    # y moments agree to float rounding only (summation order differs)
    assert np.allclose(merged.layer_table()["y_mean"], rec_cat.layer_table()["y_mean"], rtol=1e-12, atol=1e-12)


def test_merging_on_the_resnet_with_recorded_splits():
    from sttn_sim.synthetic import synthetic_model

    model = fold(synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10))
    b = _batches(model, 3, size=2)
    whole = collect_activations(model, b, progress=False)
    parts = collect_activations(model, b[:1], progress=False) + collect_activations(model, b[1:], progress=False)
    _assert_same_counts(parts, whole)
    _assert_same_counts(collect_activations(model, b, progress=False, recorder=ActivationRecorder(backend="numpy")),
                        whole)
    assert len(whole.layers) == 16 and list(whole.layer_table()["layer"].cat.categories) == whole.layers


def test_latent_and_folded_record_the_same_codes():
    from sttn_sim.synthetic import synthetic_model

    model = synthetic_model("ternary_mlp", seed=2)
    b = _batches(model, 2)
    r_latent = collect_activations(model, b, progress=False)
    r_folded = collect_activations(fold(model), b, progress=False)
    for layer in r_latent.layers:
        assert np.array_equal(r_latent.code_counts(layer), r_folded.code_counts(layer))
    assert r_folded.layer_table()["consumers"].tolist()[:2] == ["fc1", "fc2"]
    assert r_latent.consumer_macs() == r_folded.consumer_macs()


def test_custom_executor_and_bad_merges():
    model = tiny_conv_model()
    seen = []

    def executor(m, x, recorder):
        seen.append(x.shape)
        run_reference(m, x, record=False, recorder=recorder)

    rec = collect_activations(model, [X, X], executor=executor, bins=EDGES, progress=False)
    assert seen == [(1, 4, 2, 2)] * 2 and rec.histogram("act")[1].tolist() == [2 * h for h in HIST]
    with pytest.raises(SttnError, match="different histogram bins"):
        rec + ActivationRecorder()
    with pytest.raises(SttnError, match="tie_eps"):
        ActivationRecorder(EDGES, tie_eps=1e-6) + ActivationRecorder(EDGES, tie_eps=1e-3)
    with pytest.raises(SttnError, match="strictly increasing"):
        ActivationRecorder([0.0, 0.0, 1.0])
    with pytest.raises(SttnError, match="on_batch_start"):
        ActivationRecorder().on_layer(LayerEvent(model["act"], np.zeros((1, 4, 2, 2), np.int8),
                                                 pre_activation=np.zeros((1, 4, 2, 2)),
                                                 codes=np.zeros((1, 4, 2, 2), np.int8)))


def test_float32_events_like_the_engine():
    """The packed engine passes float32 values; the recorder must accept them."""
    model = fold(tiny_conv_model())
    rec = ActivationRecorder(EDGES)
    rec.on_batch_start(model, 1)
    layer = model["act"]
    codes = run_reference(model, X).outputs["act"]
    rec.on_layer(LayerEvent(layer, codes, pre_activation=X.astype(np.float32), codes=codes))
    assert rec.histogram("act")[1].tolist() == HIST


@pytest.mark.parametrize("shape,kernel,stride,pad", [((3, 5, 5), 3, 1, 1), ((2, 6, 7), 3, 2, 1), ((2, 4, 4), 1, 2, 0),
                                                      ((1, 3, 3), 5, 1, 2), ((2, 8, 8), 3, 2, 0), ((1, 2, 2), 3, 1, 1)])
def test_mac_maps_against_loops(shape, kernel, stride, pad):
    """MAC maps against counting every (output position, tap) pair of a convolution."""
    from sttn_sim.stats.activations import mac_maps

    rng = np.random.default_rng(sum(shape) + kernel + stride + pad)
    c, h, w = shape
    nonzero = rng.random((4, c, kernel, kernel)) < 0.6
    out_h, out_w = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    weights = np.zeros((c, h, w), np.int64)
    positions = np.zeros((h, w), np.int64)
    for i in range(out_h):
        for j in range(out_w):
            for p in range(kernel):
                for q in range(kernel):
                    r, s = stride * i + p - pad, stride * j + q - pad
                    if 0 <= r < h and 0 <= s < w:
                        weights[:, r, s] += nonzero[:, :, p, q].sum(axis=0)
                        positions[r, s] += 1
    got_w, got_p, outs = mac_maps(nonzero, shape, stride, pad)
    assert np.array_equal(got_w, weights.reshape(c, -1)) and np.array_equal(got_p, positions.reshape(-1))
    assert outs == out_h * out_w
    if pad == 0:  # without padding every tap of every output position lands on the map
        assert got_w.sum() == outs * nonzero.sum() and got_p.sum() == outs * kernel * kernel


def test_the_packed_engine_feeds_the_same_recorder():
    """The engine calls the same hook with float32 / int32 values: identical codes and MACs."""
    engine_mod = pytest.importorskip("sttn_sim.engine")
    from sttn_sim.synthetic import synthetic_model

    model = fold(synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10))
    engine = engine_mod.Engine(model)
    b = _batches(model, 2, size=2)
    ref = collect_activations(model, b, progress=False)
    eng = collect_activations(model, b, progress=False, executor=lambda m, x, rec: engine.run(x, recorder=rec))
    assert eng.layers == ref.layers
    for layer in ref.layers:
        assert np.array_equal(eng.code_counts(layer), ref.code_counts(layer))
        # float32 y may cross a bin edge; the totals cannot change
        assert eng.histogram(layer)[1].sum() + sum(eng.histogram(layer)[2:]) == ref.code_counts(layer).sum()
    assert eng.consumer_macs() == ref.consumer_macs()


def test_the_engine_fast_path_equals_recording_its_codes():
    """The engine fills the recorder's accumulators inside its threshold kernel; a recorder
    that declines the fast path gets the codes instead. Every count must be identical."""
    from sttn_sim.engine import Engine
    from sttn_sim.recording import LayerEvent
    from sttn_sim.synthetic import synthetic_model

    class CodesOnly(ActivationRecorder):
        def threshold_accumulator(self, layer):
            return None

    model = fold(synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10, seed=4))
    engine = Engine(model, threads=1)  # whole batches: the spied recorder gets the events itself
    fast, slow = ActivationRecorder(), CodesOnly()
    seen = []
    original = fast.on_layer

    def spy(event: LayerEvent):
        seen.append(event.statistics is not None)
        original(event)

    fast.on_layer = spy
    for x in _batches(model, 3, size=2):
        engine.run(x, recorder=fast)
        engine.run(x, recorder=slow)
    assert sum(seen) == 3 * 16  # every packed threshold went through the fused kernel
    assert fast.layers == slow.layers
    for layer in fast.layers:
        a, b = fast._stats[layer].acc, slow._stats[layer].acc
        for name in ("hist", "counts", "tie_counts", "macs", "ch_min", "ch_max"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (layer, name)
        # float32 partial sums over a segment, then float64 (see test_kernels_quantizer_stats)
        np.testing.assert_allclose(a.ch_sum, b.ch_sum, rtol=1e-5, atol=1e-6 * a.positions * a.n_images)
    float_columns = ["y_mean", "y_std"]
    assert fast.layer_table().drop(columns=float_columns).equals(slow.layer_table().drop(columns=float_columns))


def test_bins_the_engine_cannot_fuse_fall_back_to_the_codes():
    """Non-uniform edges are not fusable: the engine then writes the codes out and the
    recorder bins them itself; the statistics equal those of the fused path on the same
    run for everything the bins do not change."""
    from sttn_sim.engine import Engine
    from sttn_sim.synthetic import synthetic_model

    model = fold(synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10, seed=5))
    engine = Engine(model)
    uneven = ActivationRecorder([-4.0, -1.0, -0.5, 0.0, 0.2, 0.5, 1.0, 4.0])
    even = ActivationRecorder()
    x = _batches(model, 1, size=3)[0]
    engine.run(x, recorder=uneven)
    engine.run(x, recorder=even)
    layer = uneven.layers[0]
    assert uneven.threshold_accumulator(model[layer]) is None and even.threshold_accumulator(model[layer]) is not None
    for name in uneven.layers:
        assert np.array_equal(uneven.code_counts(name), even.code_counts(name))
        y = uneven._stats[name].acc
        assert y.hist.sum() == even._stats[name].acc.hist.sum() == y.counts.sum()
        # the count of values at or above 0.5 is the same on both edge sets
        assert y.hist[6:].sum() == even._stats[name].acc.hist[91:].sum()
    assert uneven.consumer_macs() == even.consumer_macs()


def test_a_recorded_batch_on_two_threads_equals_the_one_thread_run():
    """With two threads every kernel splits the batch into tasks with their own partial
    statistics: every integer statistic equals the one-thread run's; the float64 sums
    differ only by summation order (rtol 1e-12: a handful of roundings of sums of
    1e3-1e4 terms)."""
    from sttn_sim.engine import Engine
    from sttn_sim.synthetic import synthetic_model

    model = fold(synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10, seed=6))
    whole, split = Engine(model, threads=1), Engine(model, threads=2)
    assert split.threads == 2
    one, two = ActivationRecorder(), ActivationRecorder()
    for x in _batches(model, 2, size=5):
        np.testing.assert_array_equal(whole.run(x, recorder=one), split.run(x, recorder=two))
    assert (one.batches, one.samples) == (two.batches, two.samples) == (2, 10)
    for layer in one.layers:
        a, b = one._stats[layer].acc, two._stats[layer].acc
        assert a.n_images == b.n_images == 10
        for name in ("hist", "counts", "tie_counts", "macs", "ch_min", "ch_max"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (layer, name)
        np.testing.assert_allclose(b.ch_sum, a.ch_sum, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(b.ch_sumsq, a.ch_sumsq, rtol=1e-12, atol=1e-9)
    assert one.consumer_macs() == two.consumer_macs()


@pytest.mark.parametrize("tie, text", [
    ("sttn", ["+1 if x >= 0.5; -1 if x < -0.5", "+1 if x <= -0.5; -1 if x > 0.5"]),
    ("half_even", ["+1 if x > 0.5; -1 if x < -0.5", "+1 if x < -0.5; -1 if x > 0.5"]),
])
def test_threshold_table_rule_text_follows_the_tie_rule(tie, text):
    model = tiny_conv_model()
    act = model["act"]
    model = model.replace_layers([Layer(l.name, l.kind, l.inputs, {**l.attrs, "tie": tie}, l.params) if l is act else l
                                  for l in model.layers])
    for form in (model, fold(model)):
        rules = activation_thresholds(form)["rule"].tolist()
        assert rules[:2] == text and rules[2] == "constant +1"
    # the text is the rule the executor applies: x exactly on the threshold of channel 0
    x = np.zeros((1, 4, 2, 2), np.float32)
    x[0, 0] = 0.5
    for form in (model, fold(model)):
        codes = run_reference(form, x, record=True).outputs["act"][0, 0]
        assert (codes == (1 if tie == "sttn" else 0)).all()
