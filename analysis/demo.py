"""``sttn demo`` / ``python -m analysis.demo``: the main job on the embedded default model.

The embedded default is a small official-style STTN ResNet trained on the digits
data set (:func:`sttn_sim.default_model`).  The demo

1. folds it and verifies the folded model against the training-time model, and the
   packed engine against the float64/int64 reference (``verify_report.json``/``.txt``);
2. evaluates it on the digits test split three ways — the training-time model in
   float64, the folded model through the packed engine, and the accuracy recorded at
   training time — which must all agree (``accuracy.json``);
3. writes every statistic table (CSV) and figure (PNG + PDF) of
   :func:`analysis.report.write_all` (weight sparsity, learned intervals, baselines,
   Δ sweeps, activation distributions, BN-implied thresholds, cost).
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm  # plain text bar: tqdm.auto warns in Jupyter without ipywidgets

from sttn_sim.check import verify_model
from sttn_sim.cli import module_main
from sttn_sim.datasets import default_model, digits
from sttn_sim.engine import Engine
from sttn_sim.fold import fold
from sttn_sim.io.atomic import atomic_write_text, ensure_output_dir
from sttn_sim.reference import reference_forward
from sttn_sim.verify import write_report

from .report import write_all
from .style import use_file_backend

DESCRIPTION = ("Run the main job on the embedded default model: fold and verify it, evaluate it three ways on "
               "the digits test split, and write every statistic table and figure.")


def run_demo(out_dir: str = "sttn_out", *, progress: bool = True, verify_batch: int = 64) -> dict:
    """Run the demo and return a summary dict (paths written, checks, accuracies)."""
    out = ensure_output_dir(out_dir)
    steps = tqdm(total=4, desc="demo", disable=not progress, unit="step")
    steps.set_postfix_str("loading and folding the default model")
    model = default_model()
    _, _, x_test, y_test = digits()
    folded = fold(model)
    steps.update()

    steps.set_postfix_str("verifying (fold and engine)")
    report = verify_model(model, folded, x=x_test[:verify_batch], engine=True)
    written = write_report(report, out)
    steps.update()

    steps.set_postfix_str("accuracy on the digits test split")
    correct_engine = int((Engine(folded).run(x_test).argmax(1) == y_test).sum())
    correct_reference = int((reference_forward(model, x_test).argmax(1) == y_test).sum())
    recorded = model.metadata.get("test_accuracy")
    correct_recorded = None if recorded is None else int(round(recorded * len(y_test)))
    accuracy = {
        "test_images": int(len(y_test)),
        "correct_engine_folded": correct_engine,
        "correct_reference_training_time": correct_reference,
        "correct_recorded_at_training": correct_recorded,
        "accuracy_engine": correct_engine / len(y_test),
        "agree": correct_engine == correct_reference and correct_recorded in (None, correct_engine),
    }
    atomic_write_text(out / "accuracy.json", json.dumps(accuracy, indent=2) + "\n")
    written.append(out / "accuracy.json")
    steps.update()

    steps.set_postfix_str("statistics and figures")
    batches = [x_test[i:i + 120] for i in range(0, len(x_test), 120)]
    stats = write_all(model, batches, out, progress=False, log=lambda *a, **k: None, executor="engine",
                      description="embedded default model (digits test split)")
    steps.update()
    steps.close()
    return {
        "model": "embedded default: " + model.metadata.get("architecture", model.arch),
        "verification_passed": report.passed,
        "accuracy": accuracy,
        "mean_weight_sparsity": stats.get("mean_weight_sparsity"),
        "written": [str(p) for p in written] + stats["written"],
        "passed": bool(report.passed and accuracy["agree"]),
    }


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", default="sttn_out", help="output folder (default sttn_out)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    use_file_backend()
    summary = run_demo(args.out, progress=not args.json)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        acc = summary["accuracy"]
        print(f"{summary['model']}")
        print(f"verification (folded == training-time; engine == reference): "
              f"{'PASSED' if summary['verification_passed'] else 'FAILED'}")
        print(f"digits test accuracy: engine {acc['correct_engine_folded']}/{acc['test_images']}, "
              f"training-time float64 {acc['correct_reference_training_time']}/{acc['test_images']}, "
              f"recorded at training {acc['correct_recorded_at_training']}/{acc['test_images']} "
              f"-> {'agree' if acc['agree'] else 'DISAGREE'}")
        print(f"wrote {len(summary['written'])} files to {args.out}/ (verify_report.txt, accuracy.json, "
              f"weight_sparsity.png, figure1_*.png, ... )")
    return 0 if summary["passed"] else 1


main = module_main(__name__, "python -m analysis.demo")

if __name__ == "__main__":
    sys.exit(main())
