"""The packed engine against the float64/int64 reference."""

import numpy as np
import pytest

from sttn_sim import ModelError, ShapeError, fold, reference_forward, synthetic_input, synthetic_model
from sttn_sim.engine import Engine
from sttn_sim.check import check_engine
from sttn_sim.kernels.selection import runnable_classes
from sttn_sim.recording import Recorder
from sttn_sim.reference import run_reference

MODELS = {
    "resnet_w8": ("sttn_resnet18", dict(width=0.125, input_size=32, num_classes=10)),
    "resnet_w5": ("sttn_resnet18", dict(width=5 / 64, input_size=32, num_classes=7)),  # 5,10,20,40 channels
    "resnet_small_stem": ("sttn_resnet18", dict(width=1 / 16, input_size=8, in_channels=1, stem="small", blocks=4)),
    "cnn_odd": ("plain_ternary_cnn", dict(channels=(63, 65, 130), input_size=9)),
    "cnn": ("plain_ternary_cnn", {}),
    "mlp": ("ternary_mlp", dict(hidden=(65, 130))),
}


@pytest.fixture(scope="module", params=list(MODELS))
def folded(request):
    name, kwargs = MODELS[request.param]
    model = synthetic_model(name, seed=7, **kwargs)
    return fold(model)


@pytest.mark.parametrize("batch", [1, 5])
def test_layer_local_exact_and_end_to_end_close(folded, batch):
    x = synthetic_input(folded, batch, seed=batch)
    report = check_engine(folded, x)
    assert report.passed, report.to_text()
    ternary = report.table[report.table["kind"].str.startswith("ternary")]
    assert len(ternary) == len(folded.ternary_layers())
    assert (ternary["acc_mismatches"] == 0).all()


def test_logits_and_recorded_accumulators(folded):
    x = synthetic_input(folded, 3, seed=11)
    events = []

    class Capture:
        def on_batch_start(self, model, n):
            assert n == 3

        def on_layer(self, event):
            events.append(event)

    logits = Engine(folded).run(x, recorder=Capture())
    ref = run_reference(folded, x)
    assert logits.dtype == np.float32 and logits.shape == ref.logits.shape
    codes_equal = all(np.array_equal(e.codes, ref.outputs[e.layer.name]) for e in events if e.codes is not None)
    if codes_equal:  # no float32 near-tie flip on this batch: everything downstream is exact too
        # float32 against float64: the residual stream carries ~1e-7 relative error per layer
        assert np.max(np.abs(logits - ref.logits)) <= 1e-4 * max(1.0, np.abs(ref.logits).max())
        for e in events:
            if e.accumulator is not None:
                assert np.array_equal(e.accumulator.astype(np.int64), ref.accumulators[e.layer.name]["acc"])
    assert sum(e.accumulator is not None for e in events) == len(folded.ternary_layers())


@pytest.mark.parametrize("threads", [1, 2])
def test_epilogue_inside_the_convolution_gives_the_values_of_the_separate_one(folded, threads):
    """A recorder that does not want accumulators gets the convolutions with their float
    epilogue applied inside the kernel: every layer's output and the logits are the
    separate epilogue's, bit for bit; only the accumulators are missing."""

    class Outputs(Recorder):
        def __init__(self, wants):
            self.wants_accumulators = wants
            self.events = []

        def on_layer(self, event):
            self.events.append(event)

    x = synthetic_input(folded, 3, seed=5)
    engine = Engine(folded, threads=threads)
    separate, fused = Outputs(True), Outputs(False)
    logits_separate = engine.run(x, recorder=separate)
    logits_fused = engine.run(x, recorder=fused)
    assert np.array_equal(logits_fused.view(np.uint32), logits_separate.view(np.uint32))
    assert np.array_equal(engine.run(x).view(np.uint32), logits_separate.view(np.uint32))
    assert [e.layer.name for e in fused.events] == [e.layer.name for e in separate.events]
    for a, b in zip(separate.events, fused.events):
        out_a, out_b = np.asarray(a.output), np.asarray(b.output)
        assert out_a.dtype == out_b.dtype and np.array_equal(out_a.view(np.uint8), out_b.view(np.uint8)), a.layer.name
        if a.accumulator is None or (a.layer.kind == "ternary_conv" and out_a.dtype == np.float32):
            assert b.accumulator is None, a.layer.name  # the epilogue ran inside the convolution
        else:
            assert np.array_equal(b.accumulator, a.accumulator), a.layer.name


def test_zero_and_all_nonzero_inputs():
    model = synthetic_model("plain_ternary_cnn", seed=1, channels=(64, 65))
    folded = fold(model)
    for x in (np.zeros((2, 1, 8, 8), np.float32), np.full((2, 1, 8, 8), 3.0, np.float32)):
        assert check_engine(folded, x).passed


def test_negative_and_zero_bn_gamma_are_present_and_exact():
    model = synthetic_model("sttn_resnet18", seed=2, width=0.125, input_size=32, num_classes=10)
    gammas = np.concatenate([l.params["weight"] for l in model.layers if l.kind == "batchnorm"])
    assert (gammas < 0).any() and (gammas == 0).any()
    assert check_engine(fold(model), synthetic_input(model, 2, 0)).passed


@pytest.mark.parametrize("cpu_class", runnable_classes())
def test_every_cpu_class_runs_the_model_exactly(cpu_class):
    """Each class's kernels (all of them run on a wide CPU) on a ResNet-18 with odd
    channel counts and γ < 0 / γ = 0: exact accumulators, codes and logits."""
    model = synthetic_model("sttn_resnet18", seed=2, width=5 / 64, input_size=32, num_classes=7)
    folded = fold(model)
    engine = Engine(folded, cpu_class=cpu_class)
    assert engine.kernels["cpu_class"] == cpu_class
    report = check_engine(folded, synthetic_input(model, 2, 3), engine)
    assert report.passed, report.to_text()


def test_thread_settings_give_identical_logits():
    model = synthetic_model("sttn_resnet18", seed=4, width=0.125, input_size=32, num_classes=10)
    folded = fold(model)
    x = synthetic_input(model, 3, 1)
    auto = Engine(folded)
    assert auto.kernels["threads"].startswith("auto (1 to ")
    one, two = Engine(folded, threads=1), Engine(folded, threads=2)
    assert one.kernels["threads"] == 1
    expected = one.run(x)
    for engine in (two, auto, auto):
        assert np.array_equal(engine.run(x), expected)  # every kernel is exact or order-fixed per element
    from sttn_sim.kernels.threads import ThreadCountError

    with pytest.raises(ThreadCountError, match="threads: expected a positive integer or 'auto', got 0"):
        Engine(folded, threads=0)


def test_engine_check_fails_on_a_wrong_kernel():
    """A check that cannot fail proves nothing: an engine built from other codes is caught."""
    model = synthetic_model("plain_ternary_cnn", seed=3)
    folded = fold(model)
    engine = Engine(folded)
    altered = folded.copy()
    codes = altered["features.6"].params["codes"]
    codes[0] = -codes[0]
    codes[0, 0, 0, 0] = 1
    report = check_engine(altered, synthetic_input(model, 2, 0), engine=engine)
    assert not report.passed
    assert report.first_failure["layer"] == "features.6" and report.first_failure["check"] == "accumulator"


def test_engine_check_fails_on_a_wrong_fused_epilogue(monkeypatch):
    """The unrecorded run's in-kernel epilogue is checked too: one whose bias is off by
    2^-20 is caught, where the float tolerance alone would pass it."""
    from sttn_sim.kinds import ternary_layers
    from sttn_sim.kernels.fused import AffineEpilogue

    def off_by_a_little(scale, bias, residual=None, slope=None):
        return AffineEpilogue(scale, (bias + np.float32(2.0**-20)).astype(np.float32), residual, slope)

    name, kwargs = MODELS["resnet_w8"]
    model = synthetic_model(name, seed=3, **kwargs)
    folded = fold(model)
    x = synthetic_input(model, 2, 0)
    assert check_engine(folded, x).passed
    monkeypatch.setattr(ternary_layers, "AffineEpilogue", off_by_a_little)
    report = check_engine(folded, x)
    assert not report.passed and report.first_failure["check"] == "fused epilogue"
    assert report.table.loc[report.table["step"] == report.first_failure["layer"], "status"].item() == "FAIL"


def test_use_reference_switch(folded):
    x = synthetic_input(folded, 2, seed=0)
    assert np.array_equal(Engine(folded, use_reference=True).run(x), reference_forward(folded, x))


def test_bad_input_names_what_was_expected():
    folded = fold(synthetic_model("sttn_resnet18", seed=0, width=0.125, input_size=32, num_classes=10))
    engine = Engine(folded)
    good = synthetic_input(folded, 1)
    cases = [
        (good[0], "expected shape (N, 3, 32, 32)"),  # wrong rank
        (np.zeros((1, 4, 32, 32), np.float32), "expected shape (N, 3, 32, 32)"),  # channels
        (np.zeros((1, 3, 31, 32), np.float32), "expected shape (N, 3, 32, 32)"),  # spatial size
        (good.astype(np.int32), "expected a float array"),
        (np.where(np.arange(good.size).reshape(good.shape) == 5, np.nan, good).astype(np.float32), "NaN"),
    ]
    for x, needle in cases:
        with pytest.raises(ShapeError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            engine.run(x)


def test_unfolded_model_is_refused():
    model = synthetic_model("ternary_mlp", seed=0)
    with pytest.raises(ModelError, match="fold"):
        Engine(model)


def test_engine_check_fails_on_a_wrong_constant_code():
    """A γ = 0 channel's code is a constant: no comparison, so a difference there is never a
    near-tie (the zero-vs-zero float32 window would otherwise excuse it)."""
    model = synthetic_model("sttn_resnet18", seed=0, width=0.125, input_size=32, num_classes=10)
    folded = fold(model)
    engine = Engine(folded)
    altered = folded.copy()
    layer = next(l for l in altered.layers if l.kind == "threshold" and np.any(l.params["direction"] == 0))
    c = int(np.flatnonzero(layer.params["direction"] == 0)[0])
    layer.params["constant"][c] = 1 if layer.params["constant"][c] != 1 else -1
    report = check_engine(altered, synthetic_input(model, 2, 0), engine=engine)
    row = report.table[report.table["step"] == layer.name].iloc[0]
    assert row["status"] == "FAIL" and row["near_ties"] == 0 and not report.passed
    assert report.first_failure["layer"] == layer.name and report.first_failure["channel"] == c


@pytest.mark.parametrize("ttq", [False, True])
@pytest.mark.parametrize("tie", ["sttn", "half_even"])
def test_tie_rules_and_asymmetric_scales_run_packed_exactly(tie_model, tie, ttq):
    """Exact ties (dyadic values) under both tie rules, and TTQ layers (two partial sums,
    BN and the residual fused into the asymmetric epilogue): every accumulator and every
    code equal to the reference's, no near-tie needed to explain anything."""
    folded = fold(tie_model(tie, ttq))
    x = tie_model.input(folded, 5).astype(np.float32)
    engine = Engine(folded)
    if ttq:
        fused = {s.layer.name: s.fused for s in engine.steps}
        assert fused["conv2"] == ["bn2", "add"]  # BN and residual in the TTQ epilogue
        assert "scale_neg" in engine.graph["add"].params
    report = check_engine(folded, x)
    assert report.passed, report.to_text()
    table = report.table
    ternary = table[table["kind"].str.startswith("ternary")]
    assert len(ternary) == 3 and (ternary["acc_mismatches"] == 0).all()
    thresholds = table[table["kind"].str.startswith("threshold")]
    assert (thresholds["code_mismatches"] == 0).all()
    assert report.end_to_end_code_differences == 0
    # recorded accumulators of the asymmetric layers are conv(x, t) = acc+ - acc-
    events = []

    class Capture:
        def on_batch_start(self, model, n):
            pass

        def on_layer(self, event):
            events.append(event)

    engine.run(x, recorder=Capture())
    ref = run_reference(folded, x.astype(np.float64))
    for ev in events:
        if ev.layer.ternary_form == "folded":
            assert np.array_equal(ev.accumulator, ref.accumulators[ev.layer.name]["acc"])


def test_verify_passes_on_ties_and_ttq(tie_model):
    from sttn_sim.check import verify_model

    for tie in ("sttn", "half_even"):
        for ttq in (False, True):
            model = tie_model(tie, ttq)
            report = verify_model(model, x=tie_model.input(model, 4), engine=True)
            assert report.passed, report.to_text()
            assert (report.table["code_mismatches"].dropna() == 0).all()
