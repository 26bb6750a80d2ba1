"""Compare two checkpoints of the same architecture, layer by layer.

Typical use: an STTN model against a TWN- (or TTQ-, fixed-Δ-) trained model of the same
architecture, or two epochs of one training run::

    table = compare_models(sttn_model, twn_model, labels=("sttn", "twn"))

The models may be in any form (latent, merged, folded): weight statistics come from the
codes each model actually runs with. Learned-interval columns need latent kernels and
are NaN for a side that has none (``intervals_<label>`` says whether they were available).

``python -m analysis.compare A B [--labels LA LB] [--out DIR] [--json]`` prints (and
writes as CSV) the table.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd

from sttn_sim.cli import module_main
from sttn_sim.errors import ModelError, SttnError
from sttn_sim.graph import Model
from sttn_sim.io import load_checkpoint
from sttn_sim.io.atomic import atomic_path, ensure_output_dir
from sttn_sim.stats.intervals import interval_statistics
from sttn_sim.stats.weights import layer_ternary_weights

from .baselines import layer_weights
from .style import use_file_backend

WEIGHT_METRICS = ("kind", "sparsity", "frac_neg", "frac_pos", "scale_mean")
INTERVAL_METRICS = ("eq_delta_rel", "overlap", "best_delta_rel", "best_error_rate")
ACTIVATION_METRICS = ("frac_neg", "frac_zero", "frac_pos", "dead_channels", "nonzero_mac_fraction")


def _check_labels(labels) -> tuple[str, str]:
    if len(labels) != 2 or labels[0] == labels[1] or not all(isinstance(l, str) and l for l in labels):
        raise ModelError(f"labels must be two different non-empty strings, got {labels!r}")
    return labels[0], labels[1]


def check_same_architecture(a: Model, b: Model, labels=("a", "b")) -> None:
    """Raise :class:`ModelError` unless both models have the same ternary layers (names,
    order and kernel shapes)."""
    la, lb = _check_labels(labels)
    ta, tb = a.ternary_layers(), b.ternary_layers()
    names_a, names_b = [l.name for l in ta], [l.name for l in tb]
    if names_a != names_b:
        only_a = [n for n in names_a if n not in names_b]
        only_b = [n for n in names_b if n not in names_a]
        raise ModelError(
            f"models {la!r} ({a.arch}) and {lb!r} ({b.arch}) do not have the same ternary layers: "
            f"only in {la}: {only_a or 'none'}; only in {lb}: {only_b or 'none'}"
            + ("" if only_a or only_b else " (same names in a different order)"))
    for x, y in zip(ta, tb):
        sx, sy = layer_ternary_weights(x).codes.shape, layer_ternary_weights(y).codes.shape
        if sx != sy:
            raise ModelError(f"layer {x.name!r}: kernel shape {list(sx)} in {la!r} but {list(sy)} in {lb!r}")


def compare_models(a: Model, b: Model, *, labels=("a", "b")) -> pd.DataFrame:
    """Side-by-side per-layer table of two models of the same architecture.

    Columns: ``layer, order, shape, n_weights``; for each model ``<metric>_<label>`` for
    ``kind, sparsity, frac_neg, frac_pos, scale_mean`` and (latent kernels only, else NaN)
    ``eq_delta_rel, overlap, best_delta_rel, best_error_rate`` with ``intervals_<label>``;
    then ``sparsity_diff`` (b − a), ``code_agreement`` (fraction of identical codes) and
    ``zero_agreement`` (fraction where both are zero or both non-zero).
    """
    la, lb = _check_labels(labels)
    check_same_architecture(a, b, labels)
    rows = []
    for order, (x, y) in enumerate(zip(a.ternary_layers(), b.ternary_layers())):
        qx, qy = layer_ternary_weights(x), layer_ternary_weights(y)
        n = qx.codes.size
        row = {"layer": x.name, "order": order, "shape": "x".join(map(str, qx.codes.shape)), "n_weights": n}
        for label, layer, q in ((la, x, qx), (lb, y, qy)):
            row[f"kind_{label}"] = layer.kind
            row[f"sparsity_{label}"] = float(np.count_nonzero(q.codes == 0)) / n
            row[f"frac_neg_{label}"] = float(np.count_nonzero(q.codes == -1)) / n
            row[f"frac_pos_{label}"] = float(np.count_nonzero(q.codes == 1)) / n
            row[f"scale_mean_{label}"] = float(np.mean(q.scale))
            latent = layer.ternary_form == "latent"
            row[f"intervals_{label}"] = latent
            if latent:
                w, sttn = layer_weights(layer)
                stats = interval_statistics(w, sttn.codes)
                for m in INTERVAL_METRICS:
                    row[f"{m}_{label}"] = stats[m]
            else:
                for m in INTERVAL_METRICS:
                    row[f"{m}_{label}"] = np.nan
        row["sparsity_diff"] = row[f"sparsity_{lb}"] - row[f"sparsity_{la}"]
        row["code_agreement"] = float(np.mean(qx.codes == qy.codes))
        row["zero_agreement"] = float(np.mean((qx.codes == 0) == (qy.codes == 0)))
        rows.append(row)
    df = pd.DataFrame(rows)
    df["layer"] = pd.Categorical(df["layer"], categories=list(df["layer"]), ordered=True)
    return df


def compare_activations(rec_a, rec_b, *, labels=("a", "b")) -> pd.DataFrame:
    """Side-by-side activation statistics of two :class:`~sttn_sim.stats.ActivationRecorder`
    (same quantizer layers): ``<metric>_<label>`` for ``frac_neg, frac_zero, frac_pos,
    dead_channels, nonzero_mac_fraction`` and ``frac_zero_diff`` (b − a)."""
    la, lb = _check_labels(labels)
    ta, tb = rec_a.layer_table(), rec_b.layer_table()
    if list(ta["layer"].astype(str)) != list(tb["layer"].astype(str)):
        raise ModelError(f"the recorders saw different activation layers: {list(ta['layer'])} vs {list(tb['layer'])}")
    out = pd.DataFrame({"layer": ta["layer"].astype(str), "order": ta["order"]})
    for label, t in ((la, ta), (lb, tb)):
        for m in ACTIVATION_METRICS:
            out[f"{m}_{label}"] = t[m].to_numpy()
    out["frac_zero_diff"] = out[f"frac_zero_{lb}"] - out[f"frac_zero_{la}"]
    out["layer"] = pd.Categorical(out["layer"], categories=list(out["layer"]), ordered=True)
    return out


DESCRIPTION = ("Compare two checkpoints of the same architecture layer by layer "
               "(sparsity, code agreement, learned intervals where latent).")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("a", help="first checkpoint (the project's .safetensors format or an official PyTorch file)")
    p.add_argument("b", help="second checkpoint")
    p.add_argument("--labels", nargs=2, default=("a", "b"), metavar=("LA", "LB"), help="column suffixes")
    p.add_argument("--out", help="also write compare.csv to this folder")
    p.add_argument("--json", action="store_true", help="print the table as JSON records")
    return p


def run(args: argparse.Namespace) -> int:
    use_file_backend()
    out = ensure_output_dir(args.out) if args.out else None
    table = compare_models(load_checkpoint(args.a), load_checkpoint(args.b), labels=tuple(args.labels))
    if out is not None:
        with atomic_path(out / "compare.csv") as tmp:
            table.to_csv(tmp, index=False)
    if args.json:
        print(json.dumps(json.loads(table.to_json(orient="records")), indent=2))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(table.to_string(index=False))
    return 0


main = module_main(__name__, "python -m analysis.compare")

if __name__ == "__main__":
    sys.exit(main())


__all__ = ["compare_models", "compare_activations", "check_same_architecture"]
