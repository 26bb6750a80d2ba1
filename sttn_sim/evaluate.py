"""``sttn evaluate`` / ``python -m sttn_sim.evaluate``: a checkpoint's accuracy on an image
dataset through the packed engine, audited against the float64 reference.

``sttn evaluate [--checkpoint PATH] --data DIR|FILE.npz|digits [--labels FILE] [--batch N]
[--limit N] [--workers N | --scheduler ADDRESS] [--check N] [--skip-bad] [--record DIR]
[--out DIR] [--json]``

Prints top-1 and top-5, the agreement of the engine with the float64 reference on
``--check`` sampled images (top-1 identical, activation codes identical, near-tie code
flips), images/s and the share of the time spent outside the engine, skipped and
not-evaluated images; a progress bar with ETA on stderr.  Writes ``evaluation.json``,
``per_class.csv`` (and ``skipped.csv`` / ``not_evaluated.csv`` when there are any) to
``--out``, and with ``--record DIR`` the activation statistics of the whole run (the
tables ``sttn figures`` writes) to DIR.  See :mod:`sttn_sim.evaluation`.

Exit codes: 0 success; 1 an engine check failed or images were not evaluated (a
shard failed on Dask); 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from .cli import bounded_int, module_main
from .dataset_options import add_data_arguments, open_data
from .evaluation import DEFAULT_BATCH, DEFAULT_CHECK, ModelSpec, RunOptions, evaluate, loaded_model
from .verify import MAX_BATCH, MAX_INPUT_SIZE

DESCRIPTION = ("Evaluate a checkpoint on an image dataset through the packed engine: top-1/top-5, per-class "
               "accuracy, agreement with the float64 reference on sampled images, images/s, and optionally "
               "the activation statistics of the whole run; in one process or on a Dask cluster.")
#: most worker processes of --workers and decoding processes of --decode-workers
MAX_WORKERS = 256


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {value:g}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", help="model file: the project's .safetensors or an official STTN PyTorch "
                                        "checkpoint (read without unpickling); default: the embedded model")
    p.add_argument("--input-size", type=bounded_int(1, MAX_INPUT_SIZE), default=None,
                   help="input resolution of an official PyTorch checkpoint (it does not record it; default 224)")
    add_data_arguments(p, required=True)
    p.add_argument("--batch", type=bounded_int(1, MAX_BATCH), default=DEFAULT_BATCH,
                   help=f"images per engine batch (default {DEFAULT_BATCH})")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=bounded_int(1, MAX_WORKERS), default=None,
                       help="run on a Dask LocalCluster of N single-threaded worker processes (started here)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on the Dask cluster of this scheduler (tcp://host:port); its workers must see "
                            "the checkpoint and image paths")
    p.add_argument("--connect-timeout", type=_seconds, default=10.0,
                   help="seconds to wait for --scheduler to answer (default 10)")
    p.add_argument("--shard", type=bounded_int(1, 10**7), default=None,
                   help="images per Dask task (default: whole batches, at least 4 shards per worker thread, "
                        "at most 8 batches)")
    p.add_argument("--decode-workers", type=bounded_int(0, MAX_WORKERS), default=1,
                   help="in one process: decoding worker processes (0 = decode in this process; default 1)")
    p.add_argument("--check", type=bounded_int(0, 10**7), default=DEFAULT_CHECK,
                   help=f"images checked against the float64 reference (sampled; default {DEFAULT_CHECK}, 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the checked sample (default 0)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip (and list) unreadable images instead of stopping at the first one")
    p.add_argument("--record", metavar="DIR",
                   help="record the activation statistics of the whole run and write their tables to DIR")
    p.add_argument("--out", default="sttn_evaluate", help="folder for evaluation.json and per_class.csv "
                                                          "(default sttn_evaluate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (and no progress bar)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    spec = ModelSpec.of(args.checkpoint, args.input_size)
    model = loaded_model(spec).model
    source = open_data(args, model)
    result = evaluate(spec, source, options=RunOptions(batch_size=args.batch, record=args.record is not None,
                                                       skip_bad=args.skip_bad),
                      limit=args.limit, check=args.check, seed=args.seed, decode_workers=args.decode_workers,
                      workers=args.workers, scheduler=args.scheduler, shard_size=args.shard,
                      connect_timeout=args.connect_timeout, progress=not (args.json or args.quiet))
    written = result.write(args.out, record_dir=args.record)
    if args.json:
        print(json.dumps({**result.to_dict(), "written": [str(p) for p in written]}, indent=2, default=float))
    else:
        print(result.to_text())
        folders: dict[str, list[str]] = {}
        for path in written:
            folders.setdefault(str(path.parent), []).append(path.name)
        print("wrote " + "; ".join(f"{', '.join(names)} to {folder}" for folder, names in folders.items()))
    return 0 if result.passed else 1


main = module_main(__name__, "python -m sttn_sim.evaluate")

if __name__ == "__main__":
    sys.exit(main())
