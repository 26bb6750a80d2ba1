"""``sttn verify`` / ``python -m sttn_sim.verify``: is a folded ternary model exactly the model that was trained?

``sttn verify [--checkpoint PATH [--folded PATH]] [--model NAME] [--batch N] [--seed S] [--json]``
``sttn verify --checkpoint PATH --data DIR|FILE.npz|digits [--limit N] [--preprocess SPEC] ...``

The checks run on ``--batch`` seeded synthetic inputs, or with ``--data`` on the first
``--limit`` images of a dataset (default 8; the preprocessing of ``sttn evaluate``,
:mod:`sttn_sim.dataset_options`): real images are where near-ties and dead channels
show up.  The float64 references keep every layer's output of the whole batch (about
0.5 GB per 224-pixel image for both models), so keep ``--limit`` small; ``sttn
evaluate --check N`` audits the engine on a sample of any size.

Prints a per-layer table (or JSON) of the checks of :mod:`sttn_sim.check.fold_check`
(training-time model against folded model) and of :mod:`sttn_sim.check.engine_check`
(packed engine against the reference; skip with ``--no-engine``);
exit code 0 when every check passes, 1 when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from .check import TIE_EPS, VerifyReport, verify_model
from .cli import bounded_int, module_main
from .dataset_options import add_data_arguments, open_data
from .datasets import default_model
from .errors import SttnError
from .graph import Model
from .io import load_checkpoint
from .io.atomic import atomic_write_text, ensure_output_dir
from .synthetic import synthetic_model



DESCRIPTION = ("Check that a folded ternary model (int8 codes, scales, thresholds) is exactly equivalent "
               "to the training-time model (two binary kernels per layer, BN, ternary activations). "
               "Without --checkpoint, a seeded synthetic model is verified (with --data: the embedded default "
               "model, trained on digits).")
#: largest --batch and --input-size (beyond, the float64 reference would not fit in memory)
MAX_BATCH = 1024
MAX_INPUT_SIZE = 2048
#: images checked with --data when --limit is not given
DATA_LIMIT = 8


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", help="the training-time model file (the project's .safetensors, an official "
                                        "PyTorch checkpoint, or a QONNX ternary model .onnx)")
    p.add_argument("--folded", help="a folded model file to check against the checkpoint (default: fold the "
                                    "checkpoint here); use it to verify a deployed model")
    p.add_argument("--model", default="sttn_resnet18",
                   help="synthetic model builder when no checkpoint is given: sttn_resnet18 (default, width 0.125, "
                        "32x32 input), plain_ternary_cnn, ternary_mlp")
    p.add_argument("--width", type=float, default=0.125, help="width multiplier of the synthetic sttn_resnet18")
    p.add_argument("--input-size", type=bounded_int(1, MAX_INPUT_SIZE), default=None,
                   help="input size: of the synthetic sttn_resnet18 (default 32), or of an official PyTorch "
                        "checkpoint, which does not record it (default 224)")
    p.add_argument("--batch", type=bounded_int(1, MAX_BATCH), default=4, help="number of inputs (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic model and inputs")
    p.add_argument("--tie-eps", type=float, default=TIE_EPS, help="near-tie window around activation thresholds")
    p.add_argument("--no-engine", action="store_true",
                   help="skip the packed-engine check (only training-time model against folded model)")
    add_data_arguments(p, limit_default=None,
                       limit_help=f"with --data: the first N images (default {DATA_LIMIT}; at most {MAX_BATCH})")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--out", help="also write verify_report.json and verify_report.txt to this folder")
    return p


def load_or_build(args) -> Model:
    """The model named by the CLI arguments: a checkpoint; with --data and no checkpoint
    the embedded default model (trained on digits); otherwise a synthetic model."""
    if args.checkpoint:
        return load_checkpoint(args.checkpoint, input_size=args.input_size)
    if getattr(args, "data", None) is not None:
        return default_model()
    size = 32 if args.input_size is None else args.input_size
    kwargs = {"width": args.width, "input_size": size, "num_classes": 10} if args.model == "sttn_resnet18" else {}
    return synthetic_model(args.model, seed=args.seed, **kwargs)


def data_batch(args, model: Model):
    """The first ``--limit`` images of ``--data`` as one batch, and a description of them."""
    limit = DATA_LIMIT if args.limit is None else args.limit
    if limit > MAX_BATCH:
        raise SttnError(f"--limit {limit}: verify keeps every layer's output in memory; expected at most {MAX_BATCH} "
                        f"images (sttn evaluate --check N audits more)")
    source = open_data(args, model)
    batch = next(iter(source.batches(min(limit, len(source)))))
    return batch.images, {"source": source.name, "images": len(batch), "preprocess": source.preprocess.describe(),
                          "first": batch.ids[0], "last": batch.ids[-1]}


def write_report(report: VerifyReport, out_dir) -> list:
    """Write ``verify_report.json`` and ``verify_report.txt`` atomically into ``out_dir``."""
    out = ensure_output_dir(out_dir)
    paths = [out / "verify_report.json", out / "verify_report.txt"]
    atomic_write_text(paths[0], json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(paths[1], report.to_text() + "\n")
    return paths


def run(args: argparse.Namespace) -> int:
    """Verify; print the report; 0 when every check passed, 1 otherwise."""
    model = load_or_build(args)
    folded = None
    if args.folded:
        folded = load_checkpoint(args.folded)
        if folded.form != "folded":
            raise SttnError(f"--folded {args.folded}: holds a {folded.form!r} model, expected a folded one")
    x = None
    if args.data is not None:
        x, described = data_batch(args, model)
    elif args.limit is not None:
        raise SttnError("--limit: applies to --data (the synthetic batch has --batch inputs)")
    report = verify_model(model, folded, x=x, batch=args.batch, seed=args.seed, tie_eps=args.tie_eps,
                          engine=not args.no_engine)
    if x is not None:
        report.extra["data"] = described
    if args.out:
        write_report(report, args.out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        if x is not None:
            print(f"data: {described['images']} images of {described['source']} ({described['first']} .. "
                  f"{described['last']}), preprocess {described['preprocess']}")
        print(report.to_text())
    return 0 if report.passed else 1


main = module_main(__name__, "python -m sttn_sim.verify")

if __name__ == "__main__":
    sys.exit(main())
