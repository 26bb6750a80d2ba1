"""The PyTorch float32 baseline against the float64/int64 reference, layer by layer.

Models: the seed-0 synthetic STTN ResNet-18 (width 0.125, 32×32, 10 classes), folded;
its BN layers have γ < 0 channels (threshold direction -1) and one γ = 0 channel each
(direction 0: the code is the layer's ``constant``), all in float thresholds (a BN
before an activation).  The seed-0 synthetic plain ternary CNN and ternary MLP add
integer thresholds (``ternary_* → BN → activation`` folded onto the accumulator, also
with γ < 0 and γ = 0 channels), bare accumulators (epilogue ``none``) and
``ternary_linear``.  The same checks run on the graphs the engine runs
(:func:`sttn_sim.fusions.fuse_for_engine`: BN fused into weights, residual inputs and
PReLU slopes on ternary layers).

Layer-local (every layer fed the reference's own inputs rounded to float32, as in
:mod:`sttn_sim.check.engine_check`; codes and accumulators are exact in float32):

* threshold codes ``==`` the reference's, except float32 near-ties: a mismatch must be
  a value whose float32 rounding may cross its threshold,
  :func:`sttn_sim.rules.float32_near_threshold` of ``z = d·x``, in a ``d != 0`` channel
  (a ``d == 0`` channel compares nothing: there ``z = 0`` sits on the placeholder
  thresholds 0, so a naive mask would excuse every wrong constant); integer thresholds
  have no near-ties.  The near-ties are counted (0 on this input);
* bare accumulators (epilogue ``none``) ``==`` the reference's int64 ones;
* float outputs within ``FLOAT32_RTOL·max(1, max|y_ref|)``, FLOAT32_RTOL = 1e-4: float32
  rounds each operation to 2⁻²⁴ ≈ 6e-8 relative and a layer sums at most a few thousand
  terms, far below 1e-4; a wrong scale, bias, slope or BN parameter is off by far more.

End to end: every activation code ``==`` the reference's, and logits within
``LOGITS_RTOL·max(1, max|logits|)``, LOGITS_RTOL = 1e-4 (about 20 float32 layers; the
ResNet-18's logits are within 4e-7 relative, and ignoring the γ = 0 constant, the old
baseline's bug, moves them by 0.7 relative).  A code could flip end to end only where
the float32 drift of a thresholded value (baseline input against reference input)
reaches its distance to the threshold; the test also asserts that every distance is
more than DRIFT_SAFETY = 10 times the drift (at least 160 times on these inputs), so a
changed model or input that creates an end-to-end near-tie fails with that reason.
"""

import importlib
import sys

import numpy as np
import pytest
import torch

from sttn_sim.errors import ModelError
from sttn_sim.fold import fold
from sttn_sim.fusions import fuse_for_engine
from sttn_sim.graph import Layer
from sttn_sim.reference import run_reference
from sttn_sim.rules import float32_near_threshold
from sttn_sim.synthetic import synthetic_input, synthetic_model

from sttn_sim.bench.torch_baseline import TorchBaseline, frozen_baseline, torch_operation

FLOAT32_RTOL = 1e-4
LOGITS_RTOL = 1e-4
DRIFT_SAFETY = 10.0


#: the synthetic models (seed 0) and their builder arguments
MODELS = {
    "resnet18": ("sttn_resnet18", {"width": 0.125, "input_size": 32, "num_classes": 10}),
    "plain_cnn": ("plain_ternary_cnn", {}),
    "mlp": ("ternary_mlp", {}),
}


@pytest.fixture(scope="module")
def cases():
    """name -> (latent model, folded model, input batch of 4)."""
    out = {}
    for name, (builder, kwargs) in MODELS.items():
        model = synthetic_model(builder, seed=0, **kwargs)
        out[name] = (model, fold(model), synthetic_input(model, 4, seed=1))
    return out


@pytest.fixture(scope="module")
def latent(cases):
    return cases["resnet18"][0]


@pytest.fixture(scope="module")
def folded(cases):
    return cases["resnet18"][1]


@pytest.fixture(scope="module")
def x(cases):
    return cases["resnet18"][2]


@pytest.fixture(scope="module", params=[(name, form) for name in MODELS for form in ("folded", "engine graph")],
                ids=lambda p: f"{p[0]}-{p[1].replace(' ', '_')}")
def case(request, cases):
    """(graph, input): a folded model or the engine's graph of it."""
    name, form = request.param
    _, folded, x = cases[name]
    return (folded if form == "folded" else fuse_for_engine(folded)), x


def per_channel(v, ndim):
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def as_tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float32))


def thresholded(layer, ref, x):
    """(z = d·x in float64, d broadcast) of a threshold layer's reference input."""
    src = layer.inputs[0]
    value = np.asarray(ref.outputs[src] if src != "input" else x, np.float64)
    d = per_channel(layer.params["direction"], value.ndim)
    return value * d, d


def near_ties(layer, z, d):
    """Where float32 rounding of z may cross a threshold (never in d == 0 channels, never
    for integer thresholds)."""
    if layer.attrs.get("integer"):
        return np.zeros(z.shape, bool)
    near = np.zeros(z.shape, bool)
    for key in ("lo", "hi"):
        near |= float32_near_threshold(z, per_channel(np.asarray(layer.params[key], np.float64), z.ndim))
    return near & (d != 0)


def layer_local_rows(graph, operations, x, ref):
    """One row per layer: each operation fed the reference's inputs (float32)."""
    rows = []
    for layer in graph.layers:
        args = [as_tensor(ref.outputs[src] if src != "input" else x) for src in layer.inputs]
        with torch.no_grad():
            y = operations[layer.name](*args).numpy()
        y_ref = ref.outputs[layer.name]
        row = {"layer": layer.name, "kind": layer.kind}
        if layer.kind == "threshold":
            z, d = thresholded(layer, ref, x)
            mismatch = y.astype(np.int8) != y_ref
            near = near_ties(layer, z, d)
            row.update(mismatches=int(mismatch.sum()), near_ties=int((mismatch & near).sum()),
                       unexplained=int((mismatch & ~near).sum()),
                       zero_direction_mismatches=int((mismatch & (d == 0)).sum()))
        elif y_ref.dtype.kind in "iu":  # a bare accumulator
            row.update(integer_equal=bool(np.array_equal(y.astype(np.int64), y_ref)))
        else:
            row.update(max_abs_diff=float(np.max(np.abs(y.astype(np.float64) - y_ref))),
                       tolerance=FLOAT32_RTOL * max(1.0, float(np.max(np.abs(y_ref)))))
        rows.append(row)
    return rows


def test_the_models_have_negative_and_zero_gamma_in_float_and_integer_thresholds(cases):
    """The case the old baseline got wrong is present: a comparison of 0·x with the
    placeholder thresholds 0 gives +1, and γ = 0 channels whose constant is not +1 exist."""
    thresholds = [l for _, folded, _ in cases.values() for l in folded.layers if l.kind == "threshold"]
    for integer in (False, True):
        layers = [l for l in thresholds if bool(l.attrs.get("integer")) == integer]
        assert layers, f"no {'integer' if integer else 'float'} threshold layer"
        directions = np.concatenate([l.params["direction"] for l in layers])
        assert (directions == -1).any() and (directions == 0).any()
    resnet = [l for l in cases["resnet18"][1].layers if l.kind == "threshold"]
    constants = np.concatenate([l.params["constant"][l.params["direction"] == 0] for l in resnet])
    assert constants.size == len(resnet) == 16 and (constants != 1).sum() == 15


def test_layer_local_codes_accumulators_and_floats_match_the_reference(case):
    graph, x = case
    ref = run_reference(graph, x)
    rows = layer_local_rows(graph, TorchBaseline(graph).operations, x, ref)
    assert len(rows) == len(graph.layers)
    codes = [r for r in rows if r["kind"] == "threshold"]
    assert codes
    bad = [r for r in codes if r["unexplained"]]
    assert not bad, bad
    near = sum(r["near_ties"] for r in codes)
    assert near == sum(r["mismatches"] for r in codes)  # every mismatch is a near-tie ...
    assert near == 0  # ... and on this input there are none
    accumulators = [r for r in rows if "integer_equal" in r]
    assert all(r["integer_equal"] for r in accumulators), accumulators
    floats = [r for r in rows if "max_abs_diff" in r]
    assert floats and all(r["max_abs_diff"] <= r["tolerance"] for r in floats), \
        [r for r in floats if r["max_abs_diff"] > r["tolerance"]]


def test_a_baseline_ignoring_the_zero_direction_constant_fails_the_check(folded, x):
    """The old baseline's bug, put back: ``(z >= hi) - (z < lo)`` without ``constant``.
    The check catches it, in exactly the γ = 0 values whose constant is not +1."""
    ref = run_reference(folded, x)
    operations = dict(TorchBaseline(folded).operations)
    expected = 0
    for layer in folded.layers:
        if layer.kind != "threshold":
            continue
        p = layer.params
        d, lo, hi = (as_tensor(p[k]).reshape(1, -1, 1, 1) for k in ("direction", "lo", "hi"))
        operations[layer.name] = lambda v, d=d, lo=lo, hi=hi: (v * d >= hi).float() - (v * d < lo).float()
        out_shape = ref.outputs[layer.name].shape
        wrong_channels = int(((p["direction"] == 0) & (p["constant"] != 1)).sum())
        expected += wrong_channels * out_shape[0] * int(np.prod(out_shape[2:]))
    rows = layer_local_rows(folded, operations, x, ref)
    assert sum(r.get("unexplained", 0) for r in rows) == expected
    assert sum(r.get("zero_direction_mismatches", 0) for r in rows) == expected
    assert expected > 0


def test_end_to_end_codes_and_logits_match_the_reference(case):
    graph, x = case
    ref = run_reference(graph, x)
    with torch.no_grad():
        values = TorchBaseline(graph).values(as_tensor(x), keep=True)
    thresholds = [layer for layer in graph.layers if layer.kind == "threshold"]
    closest = np.inf  # smallest (distance to a threshold) / (float32 drift of the value)
    for layer in thresholds:
        if layer.attrs.get("integer"):  # integer thresholds see exact accumulators: no drift
            continue
        z, d = thresholded(layer, ref, x)
        drift = np.abs(values[layer.inputs[0]].numpy().astype(np.float64) * d - z)
        compared = np.broadcast_to(d != 0, z.shape)
        for key in ("lo", "hi"):
            distance = np.abs(z - per_channel(np.asarray(layer.params[key], np.float64), z.ndim))
            closest = min(closest, float(np.min(distance[compared] / np.maximum(drift[compared], 1e-300))))
    assert closest > DRIFT_SAFETY, "a thresholded value is within its float32 drift of a threshold"
    for layer in thresholds:
        got = values[layer.name].numpy().astype(np.int8)
        assert np.array_equal(got, ref.outputs[layer.name]), layer.name
    logits = values[graph.output].numpy().astype(np.float64)
    assert np.max(np.abs(logits - ref.logits)) <= LOGITS_RTOL * max(1.0, float(np.max(np.abs(ref.logits))))
    assert np.array_equal(logits.argmax(1), ref.logits.argmax(1))


def test_the_frozen_torchscript_module_the_benchmark_times_matches_the_reference(folded, x):
    ref = run_reference(folded, x)
    logits = frozen_baseline(folded, x)(x).astype(np.float64)
    assert logits.shape == ref.logits.shape
    assert np.max(np.abs(logits - ref.logits)) <= LOGITS_RTOL * max(1.0, float(np.max(np.abs(ref.logits))))
    assert np.array_equal(logits.argmax(1), ref.logits.argmax(1))


def threshold_layer(lo, hi):
    """A threshold over 3 features: directions +1, -1, 0 (constant -1)."""
    return Layer("t", "threshold", ["input"], {}, {
        "direction": np.array([1, -1, 0], np.int8), "lo": np.full(3, lo), "hi": np.full(3, hi),
        "constant": np.array([0, 0, -1], np.int8)})


def test_on_float32_inputs_the_float_thresholds_are_exact():
    """Thresholds that float32 cannot hold (0.1, -0.3), float32 inputs on both sides of
    them: no near-tie excuse, the codes are the float64 rule's (thresholds rounded to
    the nearest float32 instead of up would get one side wrong)."""
    layer = threshold_layer(-0.3, 0.1)
    around = [np.float32(v) for t in (0.1, -0.3) for v in (t, -t)]
    values = sorted({float(w) for v in around for w in (np.nextafter(v, np.float32(-1)), v,
                                                          np.nextafter(v, np.float32(1)))})
    x = np.repeat(np.array(values, np.float64)[:, None], 3, axis=1)
    with torch.no_grad():
        got = torch_operation(layer)(as_tensor(x)).numpy().astype(np.int8)
    want = layer.spec.reference(layer, [x])
    assert np.array_equal(got, want)
    assert set(want[:, 0]) == {-1, 0, 1} and set(want[:, 1]) == {-1, 0, 1} and set(want[:, 2]) == {-1}


def test_a_float32_near_tie_is_decided_on_the_float32_value_and_counted_as_one():
    """The float64 just below a float32 threshold: the reference says 0, the baseline
    (which sees the float32 rounding, the threshold itself) says +1, and the near-tie
    mask explains exactly that code."""
    hi = float(np.float32(0.1))
    layer = threshold_layer(-0.3, hi)
    x = np.array([[np.nextafter(hi, -1.0), 0.0, 0.0]])
    with torch.no_grad():
        got = torch_operation(layer)(as_tensor(x)).numpy().astype(np.int8)
    want = layer.spec.reference(layer, [x])
    assert (int(want[0, 0]), int(got[0, 0])) == (0, 1)
    d = per_channel(layer.params["direction"], 2)
    mismatch = got != want
    assert np.array_equal(mismatch, near_ties(layer, x * d, d) & mismatch)
    assert int(mismatch.sum()) == 1


def test_a_kind_without_a_torch_operation_is_an_error_naming_the_layer(latent):
    layer = next(l for l in latent.layers if l.kind == "ternary_act")
    with pytest.raises(ModelError, match=rf"layer '{layer.name}'.*kind 'ternary_act'"):
        torch_operation(layer)
    with pytest.raises(ModelError, match="has no operation for kind"):
        TorchBaseline(latent)


def test_without_torch_the_import_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "sttn_sim.bench.torch_baseline")
    with pytest.raises(ImportError, match=r"needs PyTorch.*torch==2\.13\.0"):
        importlib.import_module("sttn_sim.bench.torch_baseline")


@pytest.mark.parametrize("tie, ttq", [("sttn", False), ("half_even", False), ("sttn", True), ("half_even", True)])
def test_both_tie_rules_and_ttq_scales_match_the_reference(tie_model, tie, ttq):
    """Dyadic values land exactly on ±0.5 (the ties both rules decide differently); the
    baseline's codes equal the reference's with ==, TTQ's two scales included."""
    model = fold(tie_model(tie, ttq=ttq))
    x = tie_model.input(model, 6).astype(np.float32)
    ref = run_reference(model, x)
    with torch.no_grad():
        values = TorchBaseline(model).values(as_tensor(x), keep=True)
    for layer in model.layers:
        if layer.kind == "threshold":
            assert np.array_equal(values[layer.name].numpy().astype(np.int8), ref.outputs[layer.name]), layer.name
    logits = values[model.output].numpy().astype(np.float64)
    # tolerance: float32 arithmetic against float64 on dyadic values of magnitude < 100
    assert np.max(np.abs(logits - ref.logits)) <= 1e-4 * max(1.0, float(np.max(np.abs(ref.logits))))
