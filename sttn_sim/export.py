"""``sttn export`` / ``python -m sttn_sim.export``: a folded model to ONNX or QONNX.

``sttn export [--checkpoint PATH] (--onnx OUT.onnx | --qonnx OUT.onnx | both) [--batch N] [--json]``

Loads the checkpoint (any format :func:`sttn_sim.load_checkpoint` reads; without
``--checkpoint`` the embedded default model), folds it unless it is folded already,
and writes

* ``--onnx``: standard ONNX operators only (:mod:`sttn_sim.io.onnx_export`), dynamic
  batch unless ``--batch``;
* ``--qonnx``: QONNX / FINN dialect, ``Quant`` weights and ``MultiThreshold``
  activations (:mod:`sttn_sim.io.qonnx_export`), batch ``--batch`` (default 1: FINN
  and qonnx's executor need static shapes).

Each file is written atomically.  Needs the ``interop`` extra
(``pip install 'sttn_sim[interop]'``).  Exit code 0, or 2 with one ``error:`` line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import bounded_int, module_main
from .datasets import default_model
from .errors import SttnError
from .fold import fold
from .io import load_checkpoint
from .io.onnx_export import export_onnx
from .io.qonnx_export import DEFAULT_BATCH, export_qonnx
from .verify import MAX_BATCH, MAX_INPUT_SIZE

DESCRIPTION = ("Export a folded ternary model to ONNX (standard operators: convolutions with codes x scales, "
               "comparisons for the activations) or to QONNX for FINN (Quant weights, MultiThreshold "
               "activations). Without --checkpoint the embedded default model is exported.")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint", help="model file (.safetensors, official .pth/.pth.tar, QONNX .onnx); "
                                        "default: the embedded default model")
    p.add_argument("--input-size", type=bounded_int(1, MAX_INPUT_SIZE), default=None,
                   help="input resolution of an official PyTorch checkpoint (it does not record it; default 224)")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write standard ONNX here")
    p.add_argument("--qonnx", metavar="OUT.onnx", help="write QONNX (FINN dialect) here")
    p.add_argument("--batch", type=bounded_int(1, MAX_BATCH), default=None,
                   help=f"a fixed batch size (default: dynamic for --onnx, {DEFAULT_BATCH} for --qonnx)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    if not args.onnx and not args.qonnx:
        raise SttnError("export: give --onnx OUT.onnx and/or --qonnx OUT.onnx")
    if args.onnx and args.qonnx and Path(args.onnx).resolve() == Path(args.qonnx).resolve():
        raise SttnError(f"export: --onnx and --qonnx name the same file {args.onnx}")
    model = load_checkpoint(args.checkpoint, input_size=args.input_size) if args.checkpoint else default_model()
    folded = model if model.form == "folded" else fold(model)
    written = []
    if args.onnx:
        written.append({"format": "onnx", "path": str(export_onnx(folded, args.onnx, batch=args.batch))})
    if args.qonnx:
        batch = DEFAULT_BATCH if args.batch is None else args.batch
        written.append({"format": "qonnx", "path": str(export_qonnx(folded, args.qonnx, batch=batch))})
    summary = {"model": folded.arch, "source": args.checkpoint or "embedded default model",
               "ternary_layers": len(folded.ternary_layers()), "written": written}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for w in written:
            print(f"wrote {w['format'].upper()} {w['path']} ({summary['ternary_layers']} ternary layers of "
                  f"{folded.arch}, from {summary['source']})")
    return 0


main = module_main(__name__, "python -m sttn_sim.export")

if __name__ == "__main__":
    sys.exit(main())
