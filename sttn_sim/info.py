"""``sttn info PATH [--json]`` (also ``python -m sttn_sim info``): what a checkpoint holds.

Reads any checkpoint :func:`sttn_sim.load_checkpoint` reads (the project's safetensors
format, official STTN PyTorch files in zip or legacy form; chosen by content) and
prints its container, form (latent / merged / folded), architecture (width, classes,
input shape), a layer table (name, kind, parameter shapes, stored parameter count,
bits per weight: 2 for ternary layers, the float width otherwise) and the metadata.
Exit code 0, or 2 with a one-line ``error:`` message on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .cli import bounded_int, module_main
from .io import load_checkpoint, sniff_format
from .verify import MAX_INPUT_SIZE
from .graph import Model
from .stats.profile import model_profile

_FORM_TEXT = {
    "latent": "latent (training form: two latent float kernels per ternary layer)",
    "merged": "merged (one float kernel alpha*(B1+B2) per ternary layer)",
    "folded": "folded (int8 codes, per-channel scales, thresholds)",
    "float": "float (no ternary layer)",
}


def describe(model: Model, path: str | None = None, container: str | None = None, *,
             all_layers: bool = False) -> dict:
    """A JSON-ready description of ``model`` (what ``info`` prints)."""
    profile = model_profile(model)
    layers, ternary_weights, float_params, other_bits = [], 0, 0, 0
    for layer in model.layers:
        if not layer.params and not all_layers:
            continue
        prof = profile[layer.name]
        bits, count = prof.weight_bits, prof.stored_params
        row = {"name": layer.name, "kind": layer.kind,
               "shapes": {k: list(v.shape) for k, v in layer.params.items()},
               "output_shape": list(prof.output_shape), "params": count, "bits": bits,
               "macs": prof.macs, "bops": prof.bops}
        if layer.is_ternary:
            w = prof.weights
            ternary_weights += w
            row["ternary_weights"] = w
            extra = sum(int(v.size) for k, v in layer.params.items() if k not in ("codes", "weight1", "weight2", "weight"))
            float_params += extra
        else:
            float_params += count if bits is not None and bits >= 16 else 0
            other_bits += count * (bits or 0) if bits is not None and bits < 16 else 0
        layers.append(row)
    meta = dict(model.metadata)
    official = meta.get("official_arch")
    out = {
        "file": path,
        "container": container,
        "form": model.form,
        "official_arch": official,
        "arch": model.arch,
        "width": meta.get("width"),
        "num_classes": int(profile[model.output].output_shape[0]),
        "input_shape": list(model.input_shape),
        "layers": layers,
        "totals": {
            "ternary_layers": len(model.ternary_layers()),
            "ternary_weights": ternary_weights,
            "float_params": float_params,
            "packed_bytes": (2 * ternary_weights + other_bits) // 8 + 4 * float_params,
            "float32_equivalent_bytes": 4 * (ternary_weights + float_params) + other_bits // 8,
            "macs": profile.totals()["macs"],
            "bops": profile.totals()["bops"],
        },
        "metadata": meta,
    }
    return out


def _fmt_shapes(shapes: dict) -> str:
    return ", ".join(f"{k}{v}" for k, v in shapes.items()) or "-"


def format_text(info: dict) -> str:
    """The human-readable ``info`` report."""
    lines = [f"file:          {info['file']}", f"container:     {info['container']}",
             f"form:          {_FORM_TEXT.get(info['form'], info['form'])}"]
    arch = info["arch"]
    if info.get("official_arch"):
        arch += f" (official {info['official_arch']})"
    lines.append(f"architecture:  {arch}")
    details = []
    if info.get("width") is not None:
        width = info["width"]
        details.append(f"width {width:g}" + (f" (1/{round(1 / width)})" if width < 1 and (1 / width).is_integer() else ""))
    details.append(f"{info['num_classes']} classes")
    details.append("input " + "x".join(map(str, info["input_shape"])))
    lines.append(f"               {', '.join(details)}")
    t = info["totals"]
    lines.append(f"ternary:       {t['ternary_layers']} layers, {t['ternary_weights']} weights at 2 bits; "
                 f"{t['float_params']} float parameters")
    lines.append(f"packed size:   {t['packed_bytes']} bytes (float32 equivalent {t['float32_equivalent_bytes']} bytes)")
    lines.append(f"cost:          {t['macs']} MACs, {t['bops']} BOPs per image")
    lines.append("")
    rows = [("layer", "kind", "parameter shapes", "params", "bits")]
    rows += [(r["name"], r["kind"], _fmt_shapes(r["shapes"]), str(r["params"]), "-" if r["bits"] is None else str(r["bits"]))
             for r in info["layers"]]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append("metadata:")
    for key in sorted(info["metadata"]):
        lines.append(f"  {key}: {info['metadata'][key]}")
    return "\n".join(lines)


def _container(path) -> str:
    kind = sniff_format(path)
    return "sttn_sim safetensors" if kind == "safetensors" else kind


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


DESCRIPTION = ("Show what a checkpoint holds: container, form, architecture, layer table (shapes, kind, "
               "parameter count, bits per weight, MACs, BOPs) and metadata. Reads the project's safetensors files and "
               "official STTN PyTorch checkpoints (zip or legacy, training or merged form) without PyTorch; "
               "nothing in the file is executed.")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("path", help="checkpoint file (the format is detected from its content)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--input-size", type=bounded_int(1, MAX_INPUT_SIZE), default=None,
                   help="input resolution for official PyTorch checkpoints (not recorded in them; default 224)")
    p.add_argument("--all-layers", action="store_true", help="also list layers without parameters")
    return p


def run(args: argparse.Namespace) -> int:
    container = _container(args.path)
    model = load_checkpoint(args.path, input_size=args.input_size)
    info = describe(model, str(args.path), container, all_layers=args.all_layers)
    print(json.dumps(info, indent=2, default=_json_default) if args.json else format_text(info))
    sys.stdout.flush()
    return 0


main = module_main(__name__, "python -m sttn_sim.info")

if __name__ == "__main__":
    sys.exit(main())
