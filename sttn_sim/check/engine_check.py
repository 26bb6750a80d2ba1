"""Does the packed engine compute what the float64/int64 reference computes?

Every engine step is checked *layer-locally*: it is fed the reference's own inputs for
that layer (codes as int8, floats rounded to float32), so each layer is judged on its
own arithmetic:

* ternary layers: engine int32 accumulators ``==`` reference int64 accumulators
  (exact; the mismatch count is reported), and the step run as the engine runs it
  unrecorded (a convolution's epilogue applied inside its kernel, no accumulators)
  gives the recorded run's output bit for bit;
* thresholds: engine codes equal the reference codes except where the reference input
  lies within float32 rounding of a threshold — ``|z - t| <= 2⁻²³·max(|z|, |t|)`` with
  ``z = direction·x`` — because the engine sees ``float32(x)``; such codes are counted
  as near-ties, any other difference fails;
* float steps (stem convolution with its folded BN and PReLU, fused ternary epilogues,
  pooling, head): ``max |y_engine - y_ref| <= FLOAT32_RTOL·max(1, max|y_ref|)``.
  FLOAT32_RTOL = 1e-4: float32 has a 2⁻²⁴ ≈ 6e-8 unit roundoff, and a step sums up to
  a few thousand terms of order 1 (the stem's 147-term dot products, an epilogue's
  scale·acc with |acc| up to 4608), which stays well below 1e-4 relative; a wrong
  scale, bias or slope is off by far more.

End to end, the engine runs on its own.  A near-tie flip is legitimate but changes
every later layer a little, and in a deep network the differences grow; so logits
must agree within END_TO_END_RTOL only when no activation code differs end to end —
otherwise the report gives the number of differing codes and the top-1 agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine import Engine
from ..graph import Model
from ..recording import Recorder
from ..reference import run_reference
from ..rules import float32_near_threshold
from .report import first_true_position, integer_columns, table_records, table_text

FLOAT32_RTOL = 1e-4
END_TO_END_RTOL = 1e-3


class _Capture:
    def __init__(self):
        self.events = []

    def on_batch_start(self, model, batch_size):
        pass

    def on_layer(self, event):
        self.events.append(event)


@dataclass
class EngineReport:
    table: pd.DataFrame
    logits_max_abs_diff: float
    logits_tolerance: float
    top1_agreement: int
    batch: int
    end_to_end_code_differences: int
    first_failure: dict | None
    #: per image of the batch: activation codes differing end to end (int64), and
    #: whether engine and reference give the same top-1 class (bool)
    image_code_differences: np.ndarray | None = None
    image_top1_agree: np.ndarray | None = None
    kernels: dict | None = None  # the engine's CPU class and kernels (Engine.kernels)

    @property
    def passed(self) -> bool:
        layers_ok = bool((self.table["status"] != "FAIL").all())
        e2e_ok = self.end_to_end_code_differences > 0 or (
            self.logits_max_abs_diff <= self.logits_tolerance and self.top1_agreement == self.batch)
        return layers_ok and e2e_ok

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "layers": table_records(self.table),
            "logits_max_abs_diff": self.logits_max_abs_diff,
            "logits_tolerance": self.logits_tolerance,
            "top1_agreement": f"{self.top1_agreement}/{self.batch}",
            "end_to_end_code_differences": self.end_to_end_code_differences,
            "first_failure": self.first_failure,
            "kernels": self.kernels,
        }

    def to_text(self) -> str:
        body = table_text(self.table)
        lines = ["packed engine against the float64/int64 reference (layer-local)", "", body, "",
                 f"end to end: max |engine - reference| logits = {self.logits_max_abs_diff:.3g} "
                 f"(tolerance {self.logits_tolerance:.3g} when no code differs); top-1 agreement "
                 f"{self.top1_agreement}/{self.batch}; activation codes differing end to end: "
                 f"{self.end_to_end_code_differences}"]
        if self.end_to_end_code_differences:
            lines.append("note: float32 near-tie flips propagate end to end; the layer-local checks above "
                         "show every layer computes exactly what the reference does on the same input")
        if self.first_failure:
            lines.append(f"first failure: {self.first_failure}")
        lines.append("ENGINE PASS" if self.passed else "ENGINE FAIL")
        return "\n".join(lines)


def _first(mask: np.ndarray) -> dict:
    channel, position = first_true_position(mask)
    return {"channel": channel, "position": list(position)}


def check_engine(folded: Model, x: np.ndarray, engine: Engine | None = None) -> EngineReport:
    """Layer-local and end-to-end comparison of the engine against the reference."""
    engine = engine or Engine(folded)
    ref = run_reference(folded, x)
    rows, first = [], None
    for step in engine.steps:
        layer = step.layer
        args = []
        for src in step.inputs:
            value = ref.outputs[src] if src != "input" else np.asarray(x)
            if value.dtype.kind == "f":
                value = value.astype(np.float32)
            elif layer.kind == "threshold":
                value = value.astype(np.int32)
            else:
                value = value.astype(np.int8)
            args.append(value)
        if layer.kind == "threshold":
            out, event = step.run(args, Recorder())  # a plain recorder: the codes are written out
            codes_ref = ref.outputs[layer.name]
            mismatch = event.codes != codes_ref
            shape = (1, -1) + (1,) * (codes_ref.ndim - 2)
            src = step.inputs[0]
            z = np.asarray(x if src == "input" else ref.outputs[src], np.float64) * \
                layer.params["direction"].reshape(shape)
            near = np.zeros(z.shape, bool)
            for key in ("lo", "hi"):
                t = np.asarray(layer.params[key], np.float64).reshape(shape)
                near |= float32_near_threshold(z, t)
            near &= layer.params["direction"].reshape(shape) != 0  # constant channels: no comparison, no ties
            if layer.attrs.get("integer"):
                near[:] = False  # integers: no rounding, no ties
            bad = mismatch & ~near
            status = "FAIL" if bad.any() else ("tie" if mismatch.any() else "ok")
            if bad.any() and first is None:
                first = {"layer": layer.name, "check": "activation code", **_first(bad)}
            rows.append({"step": step.name, "kind": "threshold", "values": int(codes_ref.size),
                         "acc_mismatches": None, "code_mismatches": int(mismatch.sum()),
                         "near_ties": int((mismatch & near).sum()), "max_abs_float_diff": None, "status": status})
            continue
        out, event = step.run(args, Recorder())  # a plain recorder: the accumulators are kept
        acc_mismatches = None
        status = "ok"
        if layer.ternary_form == "folded":
            acc_ref = ref.accumulators[layer.name]["acc"]
            bad = event.accumulator.astype(np.int64) != acc_ref
            acc_mismatches = int(bad.sum())
            if acc_mismatches:
                status = "FAIL"
                if first is None:
                    first = {"layer": layer.name, "check": "accumulator", **_first(bad)}
            unrecorded = np.asarray(step.run(args)[0])
            if unrecorded.dtype != out.dtype or unrecorded.view(np.uint8).tobytes() != out.view(np.uint8).tobytes():
                status = "FAIL"
                if first is None:
                    first = {"layer": step.name, "check": "fused epilogue", **_first(unrecorded != out)}
        y_ref = np.asarray(ref.outputs[step.name])
        diff = float(np.max(np.abs(np.asarray(out, np.float64) - y_ref))) if y_ref.size else 0.0
        tol = FLOAT32_RTOL * max(1.0, float(np.max(np.abs(y_ref))))
        if diff > tol:
            status = "FAIL"
            if first is None:
                first = {"layer": step.name, "check": "float output", "max_abs_diff": diff, "tolerance": tol}
        rows.append({"step": step.name, "kind": layer.kind + (f" +{len(step.fused)} fused" if step.fused else ""),
                     "values": int(y_ref.size), "acc_mismatches": acc_mismatches, "code_mismatches": None,
                     "near_ties": None, "max_abs_float_diff": diff, "status": status})
    table = integer_columns(pd.DataFrame(rows), ("acc_mismatches", "code_mismatches", "near_ties"))

    capture = _Capture()
    logits = engine.run(x, recorder=capture).astype(np.float64)
    per_image = np.zeros(len(x), np.int64)
    for e in capture.events:
        if e.codes is not None:
            per_image += (e.codes != ref.outputs[e.layer.name]).reshape(len(x), -1).sum(axis=1)
    diff = float(np.max(np.abs(logits - ref.logits)))
    tol = END_TO_END_RTOL * max(1.0, float(np.max(np.abs(ref.logits))))
    agree = logits.argmax(1) == ref.logits.argmax(1)
    return EngineReport(table, diff, tol, int(agree.sum()), len(x), int(per_image.sum()), first,
                        image_code_differences=per_image, image_top1_agree=agree,
                        kernels=engine.kernels)
