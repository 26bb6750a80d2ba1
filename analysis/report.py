"""``python -m analysis.figures``: every statistic table (CSV) and figure (PNG + PDF) of a model.

``python -m analysis.figures [--checkpoint PATH [--input-size N]] [--out DIR] [--layer NAME]
[--data DIR|FILE.npz|digits [--labels FILE] [--preprocess SPEC] [--limit N]] [--batch N] [--batches K]
[--seed S] [--engine] [--json]``

Without ``--checkpoint`` it uses :func:`analysis.figures.default_model_and_data`.
Activations are collected on the folded model with the float64 reference path, or with
the packed engine (``--engine``); a tqdm progress bar shows the batches.  ``--data``
takes the sources of ``sttn evaluate`` (:mod:`sttn_sim.dataset_options`: an ImageFolder
tree, a flat folder with ``--labels``, an ``.npz``, ``digits``; of an ``.npz`` or digits
every image by default, ``--part all``), and also an ``.npz`` with only ``images``
(NCHW floats: the statistics need no labels); otherwise ``--batches`` batches of
``--batch`` seeded synthetic images are used.

Written to ``--out`` (each file atomically: nothing half-written):

* tables: ``weight_stats.csv``, ``weight_channels.csv``, ``cost.csv``,
  ``activation_layers.csv``, ``activation_channels.csv``, ``activation_histograms.csv``,
  ``activation_thresholds.csv`` and, for a model with latent kernels,
  ``learned_intervals.csv``, ``learned_interval_classes.csv``, ``baselines.csv``,
  ``delta_sweep.csv``, ``delta_sweep_sttn.csv``;
* figures (``.png`` and ``.pdf``): ``weight_sparsity``, ``activation_distributions``,
  ``activation_occupancy``, ``channel_occupancy``, ``activation_thresholds`` and, with
  latent kernels, ``figure1_<layer>``, ``learned_intervals``, ``sparsity_vs_baselines``,
  ``l2_vs_baselines``, ``delta_sweep``.

A merged or folded checkpoint, or a QONNX model (``.onnx``, e.g. a Brevitas export), has
no latent kernels: the learned-interval, baseline and sweep outputs are skipped with a
printed note naming each of them and why (listed under ``skipped`` in ``--json``).
Exit codes: 0 success, 2 bad input (unknown layer, unreadable data, unwritable folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sttn_sim.cli import bounded_int, module_main
from sttn_sim.dataset_options import add_data_arguments, open_data
from sttn_sim.engine import Engine
from sttn_sim.errors import ModelError, ShapeError, SttnError
from sttn_sim.fold import fold
from sttn_sim.io import load_checkpoint
from sttn_sim.io.atomic import atomic_path, ensure_output_dir
from sttn_sim.stats import (
    channel_weight_statistics,
    collect_activations,
    has_latent_weights,
    learned_interval_classes,
    learned_intervals,
    recorded_tables,
    weight_statistics,
)
from sttn_sim.stats.intervals import ternary_layer
from sttn_sim.synthetic import synthetic_input
from sttn_sim.verify import MAX_BATCH, MAX_INPUT_SIZE

from . import figures as F
from .baselines import baseline_table
from .figures import default_model_and_data
from .style import save_figure, use_file_backend
from .sweeps import delta_sweep, sttn_sweep_points


#: what needs latent kernels W1, W2 (skipped, with a note, for merged, folded and imported models)
LATENT_FIGURES = ("figure1_<layer>", "learned_intervals", "sparsity_vs_baselines", "l2_vs_baselines", "delta_sweep")
LATENT_TABLES = ("learned_intervals.csv", "learned_interval_classes.csv", "baselines.csv", "delta_sweep.csv",
                 "delta_sweep_sttn.csv")

DESCRIPTION = ("Write every statistic table (CSV) and paper-style figure (PNG + PDF) of a ternary model: "
               "weight sparsity, learned intervals of STTN, hard-threshold baselines, delta sweeps, "
               "activation distributions and BN-implied thresholds. Without --checkpoint the embedded "
               "default model is used.")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--checkpoint",
                   help="model file: the project's .safetensors, an official STTN PyTorch checkpoint "
                        "(.pth / .pth.tar, read without unpickling) or a QONNX ternary model (.onnx); "
                        "default: the embedded model")
    p.add_argument("--out", default="sttn_figures", help="output folder (default sttn_figures)")
    p.add_argument("--input-size", type=bounded_int(1, MAX_INPUT_SIZE), default=None,
                   help="input resolution of an official PyTorch checkpoint (it does not record it; default 224)")
    p.add_argument("--layer", help="ternary layer for Figure 1 (default: the middle ternary layer)")
    add_data_arguments(p)
    p.set_defaults(part="all")
    p.add_argument("--batch", type=bounded_int(1, MAX_BATCH), default=8, help="images per batch (default 8)")
    p.add_argument("--batches", type=bounded_int(1, 100_000), default=4, help="number of synthetic batches without --data (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the default model and synthetic batches")
    p.add_argument("--engine", action="store_true",
                   help="collect activations with the packed engine (float32) instead of the float64 reference")
    p.add_argument("--json", action="store_true", help="print a JSON summary (and no progress bar)")
    return p


class _Images:
    """The image arrays of a batch stream (with its length, for the progress bar)."""

    def __init__(self, stream):
        self.stream = stream

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self):
        return (batch.images for batch in self.stream)


def data_batches(args, model):
    """Input batches of ``--data``: any source of :func:`sttn_sim.dataset_options.open_data`,
    or an ``.npz`` with only ``images`` (:func:`load_images`)."""
    if str(args.data).lower().endswith(".npz") and _npz_without_labels(args.data):
        batches = load_images(args.data, args.batch, limit=args.limit)
        want = tuple(model.input_shape)
        if tuple(batches[0].shape[1:]) != want:
            raise ShapeError(f"{args.data}: images have shape {list(batches[0].shape[1:])} per image, the model "
                             f"expects {list(want)}")
        return batches
    return _Images(open_data(args, model).batches(args.batch, limit=args.limit))


def _npz_without_labels(path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return "labels" not in npz.files
    except (OSError, ValueError):
        return True  # load_images names the problem


def load_images(path, batch: int, limit: int | None = None) -> list[np.ndarray]:
    """Batches of the first ``limit`` ``images`` of an ``.npz`` (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files:
                raise ShapeError(f"{path}: no array 'images' in the .npz (found: {', '.join(npz.files) or 'none'})")
            images = np.asarray(npz["images"])
    except (OSError, ValueError) as exc:
        raise SttnError(f"{path}: cannot be read as an .npz file ({exc})") from None
    if images.ndim < 2 or images.shape[0] == 0 or images.dtype.kind != "f":
        raise ShapeError(f"{path}: 'images' must be a non-empty float array (N, C, H, W), got "
                         f"{images.dtype} {list(images.shape)}")
    images = images[:limit].astype(np.float32, copy=False)
    return [images[i:i + batch] for i in range(0, images.shape[0], batch)]


def write_all(model, batches, out_dir, *, layer: str | None = None, executor=None, progress: bool = True,
              description: str = "", log=print, recorder=None) -> dict:
    """Compute every table and figure of ``model`` and write them to ``out_dir``.

    ``batches``: iterable of input arrays for the activation statistics; ``executor``:
    see :func:`sttn_sim.stats.collect_activations`, or ``"engine"`` for the packed engine;
    or ``recorder``: the statistics of a run already made (e.g. ``sttn evaluate``'s
    :attr:`~sttn_sim.evaluation.Evaluation.recorder`; ``batches`` is then ignored).
    Returns a summary dict with ``written`` (paths), ``skipped`` (notes) and headline
    numbers. Raises :class:`SttnError` for bad input before anything is written.
    """
    # --- validate everything before writing anything ----------------------------------
    ternary = [l.name for l in model.ternary_layers()]
    if not ternary:
        raise ModelError(f"model {model.arch!r} has no ternary layers: nothing to analyse")
    if layer is not None:
        ternary_layer(model, layer)
    figure1_layer = layer or ternary[len(ternary) // 2]
    latent = has_latent_weights(model)
    out = ensure_output_dir(out_dir)
    written: list[Path] = []
    skipped: list[str] = []

    def table(df, name):
        path = out / name
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        written.append(path)

    def figure(fig, stem):
        try:
            written.extend(save_figure(fig, out, stem))
        finally:
            plt.close(fig)

    folded = model if model.form == "folded" else fold(model)
    if executor == "engine":

        engine = Engine(folded)

        def executor(m, x, recorder):  # noqa: F811 - one engine (prepacked weights) for every batch
            engine.run(np.ascontiguousarray(x, np.float32), recorder=recorder)
    # --- activations (the slow part, with a progress bar) -----------------------------
    rec = recorder if recorder is not None else collect_activations(folded, batches, executor=executor,
                                                                    progress=progress)
    if rec.samples == 0:
        raise SttnError("no input batches: the activation statistics need at least one image")
    # --- tables ----------------------------------------------------------------------
    wstats = weight_statistics(model)
    table(wstats, "weight_stats.csv")
    table(channel_weight_statistics(model), "weight_channels.csv")
    recorded = recorded_tables(folded, rec)
    for name, df in recorded.items():
        table(df, name)
    has_activations = "activation_layers.csv" in recorded
    if has_activations:
        layers_t, channels_t = recorded["activation_layers.csv"], recorded["activation_channels.csv"]
        hist_t, thresholds_t = recorded["activation_histograms.csv"], recorded["activation_thresholds.csv"]
    else:
        note = f"model {model.arch!r} has no ternary activation layers: activation statistics and figures skipped"
        skipped.append(note)
        log(f"note: {note}")
    summary: dict = {"model": description or f"{model.arch} ({model.form})", "images": rec.samples,
                     "ternary_layers": len(ternary), "mean_weight_sparsity": float(wstats["sparsity"].mean()),
                     "mean_activation_zero_fraction": float(layers_t["frac_zero"].mean()) if has_activations
                     else None}
    if latent:
        intervals = learned_intervals(model)
        table(intervals, "learned_intervals.csv")
        table(learned_interval_classes(model), "learned_interval_classes.csv")
        base = baseline_table(model)
        table(base, "baselines.csv")
        sweep = delta_sweep(model)
        points = sttn_sweep_points(model)
        table(sweep, "delta_sweep.csv")
        table(points, "delta_sweep_sttn.csv")
        summary["mean_overlap"] = float(intervals["overlap"].mean())
        summary["mean_eq_delta_rel"] = float(intervals["eq_delta_rel"].mean())
    else:
        source = model.metadata.get("source")
        why = (f"it was imported from {source.upper()} ({model.metadata.get('file', 'the file')}), which holds the "
               f"quantized weights, not STTN's two latent kernels W1, W2" if source == "qonnx" else
               f"model form {model.form!r} has no latent kernels W1, W2 (load the training checkpoint to get them)")
        note = (f"skipped {', '.join(LATENT_FIGURES)} (figures) and {', '.join(LATENT_TABLES)} (tables): they need "
                f"latent weights, and {why}")
        skipped.append(note)
        log(f"note: {note}")
    # --- figures ---------------------------------------------------------------------
    title = description or model.arch
    figure(F.plot_weight_sparsity(wstats, title=f"{title}\nweight codes per layer (numbers: sparsity %)"),
           "weight_sparsity")
    if latent:
        if figure1_layer in {l.name for l in model.ternary_layers() if l.kind.startswith("sttn")}:
            figure(F.plot_figure1(model, figure1_layer), f"figure1_{figure1_layer}")
        else:
            note = f"layer {figure1_layer!r} has no latent kernels: Figure 1 skipped"
            skipped.append(note)
            log(f"note: {note}")
        figure(F.plot_learned_intervals(intervals), "learned_intervals")
        figure(F.plot_sparsity_comparison(base), "sparsity_vs_baselines")
        figure(F.plot_l2_comparison(base), "l2_vs_baselines")
        figure(F.plot_delta_sweep(sweep, points), "delta_sweep")
    if has_activations:
        figure(F.plot_activation_distributions(hist_t, layer_table=layers_t), "activation_distributions")
        figure(F.plot_activation_occupancy(layers_t), "activation_occupancy")
        figure(F.plot_channel_occupancy(channels_t), "channel_occupancy")
        figure(F.plot_activation_thresholds(thresholds_t), "activation_thresholds")
    summary.update({"written": [str(p) for p in written], "skipped": skipped})
    return summary


def run(args: argparse.Namespace) -> int:
    use_file_backend()
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, input_size=args.input_size)
        description = f"{Path(args.checkpoint).name} ({model.arch}, {model.form})"
        batches = None if args.data else [synthetic_input(model, args.batch, seed=args.seed + 100 + i)
                                          for i in range(args.batches)]
    else:
        model, batches, description = default_model_and_data(args.batch, args.batches, args.seed)
    if args.data:
        batches = data_batches(args, model)
    if args.layer is not None:
        ternary_layer(model, args.layer)  # an unknown name lists the valid ones
    ensure_output_dir(args.out)  # fail on an unwritable folder before the work starts
    summary = write_all(model, batches, args.out, layer=args.layer, progress=not args.json,
                        description=description, log=log, executor="engine" if args.engine else None)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        zero = summary["mean_activation_zero_fraction"]
        print(f"{summary['model']}: {summary['ternary_layers']} ternary layers, {summary['images']} images; "
              f"mean weight sparsity {summary['mean_weight_sparsity']:.3f}"
              + (f", mean activation zero fraction {zero:.3f}" if zero is not None else ""))
        if summary["skipped"]:
            print(f"skipped ({len(summary['skipped'])}): see the notes above")
        print(f"wrote {len(summary['written'])} files to {args.out}")
    return 0


main = module_main(__name__, "python -m analysis.figures")

__all__ = ["DESCRIPTION", "add_arguments", "run", "main", "write_all", "data_batches", "load_images"]
