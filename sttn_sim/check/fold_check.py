"""Bit-exactness verification: is the folded model the model that was trained?

The library side of ``sttn verify`` / ``python -m sttn_sim.verify`` (see :mod:`sttn_sim.verify`).

Checks, on a batch of inputs (all in float64 / int64):

* per ternary layer, *layer-locally* (fed the training-time model's own input codes, so
  one broken layer does not hide behind or blame another):

  - integer accumulators: ``acc1 + acc2 == 2·acc`` where ``acc_k = conv(x, sign W_k)``
    are the two binary branches of the training-time layer and ``acc = conv(x, t)`` the
    folded one (since ``B1 + B2 = 2t``); mismatches are counted exactly, compared with
    ``==``.  (Merged checkpoints have no branches: only the float check applies.)
  - float outputs: ``max |y_train - (s·acc + b)|``; must be <= ``float_tol·max(1,|y|)``.
    Both sides are float64 sums of the same terms in a different order, so the only
    difference is rounding (~1e-15 relative); 1e-9 leaves room for that and nothing else.

* per activation quantizer, layer-locally: the folded threshold applied to the
  training-time input of the BN versus the training-time ``ternary_act`` codes.  A code
  that differs where the training-time pre-activation lies within ``tie_eps`` of a
  threshold is a documented near-tie (float64 rounding of the folded threshold); any
  other differing code is a failure.  Values exactly on a threshold are counted too
  (``exact_ties``: where the official pure-PyTorch variant would emit ±0.5).

* end to end: the two models run separately; logits must agree within
  ``logits_tol·max(1, max|logit|)`` and top-1 must agree, unless a near-tie flipped a
  code upstream (then the difference is reported, and explained, not failed).

The first divergence is reported as (layer, channel, position).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..errors import SttnError
from ..fold import fold
from ..graph import Model
from ..reference import reference_forward, run_reference
from ..rules import apply_threshold, folded_activation_bounds, near_threshold
from ..synthetic import synthetic_input
from .engine_check import check_engine
from .report import at, first_true_position, integer_columns, table_records, table_text

FLOAT_TOL = 1e-9
LOGITS_TOL = 1e-6
TIE_EPS = 1e-9


@dataclass
class Divergence:
    """Where a check first failed: layer name, channel and position (n, spatial...)."""

    layer: str
    check: str
    channel: int
    position: tuple[int, ...]
    expected: float
    got: float

    def __str__(self) -> str:
        return (f"{self.check} at layer {self.layer!r}, channel {self.channel}, position {self.position}: "
                f"expected {self.expected:g}, got {self.got:g}")


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_model`.  ``table`` has one row per checked layer."""

    model: str
    batch: int
    table: pd.DataFrame
    logits_max_abs_diff: float
    logits_tolerance: float
    top1_agreement: int
    ties_upstream: bool
    first_divergence: Divergence | None
    extra: dict = field(default_factory=dict)
    engine: object | None = None  # an EngineReport when the packed engine was checked too

    @property
    def passed(self) -> bool:
        return self.fold_passed and (self.engine is None or self.engine.passed)

    @property
    def fold_passed(self) -> bool:
        layers_ok = bool((self.table["status"] != "FAIL").all()) if len(self.table) else True
        logits_ok = self.ties_upstream or (
            self.logits_max_abs_diff <= self.logits_tolerance and self.top1_agreement == self.batch)
        return layers_ok and logits_ok and self.first_divergence is None

    def to_dict(self) -> dict:
        rows = table_records(self.table)
        return {
            "model": self.model,
            "passed": self.passed,
            "batch": self.batch,
            "layers": rows,
            "logits_max_abs_diff": self.logits_max_abs_diff,
            "logits_tolerance": self.logits_tolerance,
            "top1_agreement": f"{self.top1_agreement}/{self.batch}",
            "ties_upstream": self.ties_upstream,
            "first_divergence": None if self.first_divergence is None else
            {**asdict(self.first_divergence), "position": list(self.first_divergence.position)},
            **self.extra,
            **({"engine": self.engine.to_dict()} if self.engine is not None else {}),
        }

    def to_text(self) -> str:
        lines = [f"verification of {self.model} on a batch of {self.batch}", ""]
        lines.append(table_text(self.table) if len(self.table) else "(no ternary layers)")
        lines += [
            "",
            f"logits: max |training - folded| = {self.logits_max_abs_diff:.3g} "
            f"(tolerance {self.logits_tolerance:.3g}); top-1 agreement {self.top1_agreement}/{self.batch}",
        ]
        if self.ties_upstream:
            lines.append("note: a near-tie flipped an activation code; downstream differences are explained by it")
        if self.first_divergence is not None:
            lines.append(f"first divergence: {self.first_divergence}")
        lines.append("FOLD PASS" if self.fold_passed else "FOLD FAIL")
        if self.engine is not None:
            lines += ["", self.engine.to_text()]
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def _check_same_structure(model: Model, folded: Model) -> None:
    """The folded model must describe the same network: same input, and every folded
    ternary or threshold layer must have a counterpart of the same name."""
    if folded.form != "folded":
        raise SttnError(f"the model to check must be folded, got form {folded.form!r}")
    if tuple(folded.input_shape) != tuple(model.input_shape):
        raise SttnError(f"folded model input shape {folded.input_shape} differs from the training-time "
                        f"model's {model.input_shape}")
    names = set(model.layer_names)
    for layer in folded.layers:
        if layer.ternary_form == "folded" or layer.kind == "threshold":
            if layer.name not in names:
                raise SttnError(f"folded layer {layer.name!r} has no counterpart in the training-time model")
            if layer.kind != "threshold":
                twin = model[layer.name]
                want = next(twin.params[k] for k in ("weight1", "weight") if k in twin.params).shape
                if layer.params["codes"].shape != want:
                    raise SttnError(f"folded layer {layer.name!r}: codes shape {layer.params['codes'].shape} differs "
                                    f"from the training-time kernel shape {want}")


def verify_model(model: Model, folded: Model | None = None, x: np.ndarray | None = None, *,
                 batch: int = 4, seed: int = 0, tie_eps: float = TIE_EPS,
                 float_tol: float = FLOAT_TOL, logits_tol: float = LOGITS_TOL,
                 engine: bool = False) -> VerifyReport:
    """Verify that ``folded`` (default: ``fold(model)``) equals the training-time ``model``.

    ``x`` defaults to a seeded standard-normal batch of size ``batch``.  With
    ``engine=True`` the packed engine is also checked against the reference on the
    folded model (:func:`sttn_sim.check.engine_check.check_engine`).
    """
    if model.form == "folded":
        raise SttnError("verify needs the training-time (latent or merged) model, got an already folded one")
    if folded is None:
        folded = fold(model)
    if x is None:
        x = synthetic_input(model, batch, seed)
    _check_same_structure(model, folded)
    train = run_reference(model, x)
    folded_logits = reference_forward(folded, x)  # end to end: only the logits are needed

    rows, first = [], None
    local_acc: dict[str, np.ndarray] = {}
    tie_flip = False
    for layer in folded.layers:
        if layer.ternary_form == "folded":
            acc, y_fold, _ = layer.spec.affine_output(layer, train.outputs[layer.inputs[0]])
            local_acc[layer.name] = acc
            y_train = train.outputs[layer.name]
            branches = train.accumulators.get(layer.name)
            if branches is not None:
                two = branches["acc1"] + branches["acc2"]
                bad_acc = two != 2 * acc
                acc_mismatches = int(bad_acc.sum())
            else:
                bad_acc, acc_mismatches = None, None
            diff = np.abs(y_train - y_fold)
            bad_float = diff > float_tol * np.maximum(1.0, np.abs(y_train))
            status = "FAIL" if (acc_mismatches or bad_float.any()) else "ok"
            if status == "FAIL" and first is None:
                if acc_mismatches:
                    ch, pos = first_true_position(bad_acc)
                    first = Divergence(layer.name, "accumulator", ch, pos, float(at(two, ch, pos)),
                                       float(2 * at(acc, ch, pos)))
                else:
                    ch, pos = first_true_position(bad_float)
                    first = Divergence(layer.name, "float output", ch, pos, float(at(y_train, ch, pos)),
                                       float(at(y_fold, ch, pos)))
            rows.append({"layer": layer.name, "kind": layer.kind, "values": int(acc.size),
                         "acc_mismatches": acc_mismatches, "max_abs_float_diff": float(diff.max()),
                         "code_mismatches": None, "near_ties": None, "exact_ties": None, "status": status})
        elif layer.kind == "threshold":
            src_name = layer.inputs[0]
            value = local_acc[src_name] if layer.attrs.get("integer") else \
                np.asarray(x, np.float64) if src_name == "input" else train.outputs[src_name]
            p = layer.params
            codes_fold = apply_threshold(value, p["direction"], p["lo"], p["hi"], p["constant"],
                                         tie=layer.attrs.get("tie", "sttn"))
            codes_train = train.outputs[layer.name]
            pre = train.pre_activations[layer.name]
            lo, hi = folded_activation_bounds(layer.attrs)
            near = near_threshold(pre, lo, hi, tie_eps)
            exact = (pre == lo) | (pre == hi)
            mismatch = codes_fold != codes_train
            unexplained = mismatch & ~near
            status = "FAIL" if unexplained.any() else ("tie" if mismatch.any() else "ok")
            tie_flip |= bool(mismatch.any())
            if status == "FAIL" and first is None:
                ch, pos = first_true_position(unexplained)
                first = Divergence(layer.name, "activation code", ch, pos, float(at(codes_train, ch, pos)),
                                   float(at(codes_fold, ch, pos)))
            rows.append({"layer": layer.name, "kind": "threshold" + (" (int)" if layer.attrs.get("integer") else ""),
                         "values": int(codes_train.size), "acc_mismatches": None, "max_abs_float_diff": None,
                         "code_mismatches": int(mismatch.sum()), "near_ties": int(near.sum()),
                         "exact_ties": int(exact.sum()), "status": status})

    table = pd.DataFrame(rows, columns=["layer", "kind", "values", "acc_mismatches", "max_abs_float_diff",
                                        "code_mismatches", "near_ties", "exact_ties", "status"])
    table = integer_columns(table, ("acc_mismatches", "code_mismatches", "near_ties", "exact_ties"))
    logits_diff = float(np.max(np.abs(train.logits - folded_logits)))
    tol = logits_tol * max(1.0, float(np.max(np.abs(train.logits))))
    top1 = int(np.sum(train.logits.argmax(axis=1) == folded_logits.argmax(axis=1)))
    if first is None and not tie_flip and (logits_diff > tol or top1 != len(x)):
        worst = np.unravel_index(int(np.argmax(np.abs(train.logits - folded_logits))), train.logits.shape)
        first = Divergence(model.output, "logits", int(worst[1]), (int(worst[0]),),
                           float(train.logits[worst]), float(folded_logits[worst]))
    engine_report = check_engine(folded, x) if engine else None
    return VerifyReport(model.arch, len(x), table, logits_diff, tol, top1, tie_flip, first, engine=engine_report)
