"""``python -m analysis.soft_vs_hard``: does a soft threshold beat a hard Δ? Measured.

Trains the same small official-style STTN ResNet (DESIGN §2.3 block design,
``sttn_resnet18(stem="small", width, blocks)`` on 8×8 digits) with every method —
STTN (two binary kernels, no threshold), the hard-threshold baselines TWN
(Δ = 0.7·mean|W|), TTQ (Δ = 0.05·max|W|, learned W_p/W_n) and fixed Δ, and a
full-precision float model — with identical architecture, initial weights (per seed),
data order, epochs and optimiser, for several seeds, and reports (the latent kernels
start from PyTorch's default layer initialisation, as in the official code, so the
codes are learned rather than inherited from the initial draw):

* test accuracy per method: mean ± sample standard deviation (ddof = 1) over seeds;
* per ternary layer (mean over seeds): weight sparsity, relative L2 error
  ``||w - ŵ||² / ||w||²`` of the kernel actually used against its float counterpart
  (STTN: w = (W1 + W2)/2 and ŵ = α·t; baselines: the latent kernel and its ternary
  version), cosine similarity, and for STTN the overlap (fraction of codes no hard
  threshold on w reproduces);
* a figure: accuracy per method (mean ± std, every seed as a dot) and the per-layer
  sparsity and L2 error.

Every run happens in a worker process with one BLAS thread, so the table is the same
whatever ``--workers`` is.  Outputs in ``--out``: ``summary.csv``, ``runs.csv``,
``layers.csv``, ``history.csv``, ``soft_vs_hard.json``, ``soft_vs_hard.md`` and
``soft_vs_hard.png``/``.pdf``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

METHODS = ("sttn", "twn", "ttq", "fixed", "float")
#: extra method names accepted by --methods
EXTRA_METHODS = {"sttn_exact": ("sttn", {"sttn_grad": "exact"})}
LABELS = {"sttn": "STTN (soft)", "sttn_exact": "STTN, exact-scale grad", "twn": "TWN (Δ=0.7·mean|W|)",
          "ttq": "TTQ (Δ=0.05·max|W|, learned W_p/W_n)", "fixed": "fixed Δ", "float": "float (FP32 W and A)"}
SHORT = {"sttn": "STTN", "sttn_exact": "STTN-exact", "twn": "TWN", "ttq": "TTQ", "fixed": "fixed Δ", "float": "float"}
_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class Settings:
    """What every run shares (the architecture and the training budget)."""

    epochs: int = 20
    width: float = 0.25
    blocks: int = 4
    lr: float = 0.01
    batch_size: int = 64
    fixed_delta: float = 0.05
    granularity: str = "channel"
    latent_init: str = "pytorch"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    runs: pd.DataFrame           #: one row per method × seed
    summary: pd.DataFrame        #: one row per method
    layers: pd.DataFrame         #: one row per method × layer (mean over seeds)
    history: pd.DataFrame        #: one row per method × seed × epoch
    settings: dict
    seeds: list
    wall_seconds: float
    extra: dict = field(default_factory=dict)
    layer_history: pd.DataFrame | None = None  #: one row per method × seed × epoch × layer


# --------------------------------------------------------------------------------------
# one run (executed in a worker process)


def run_one(method: str, seed: int, settings: dict) -> dict:
    """Train one method with one seed; return plain data (picklable)."""
    from sttn_sim.builders import sttn_resnet18
    from sttn_sim.datasets import digits
    from sttn_sim.train import TrainConfig, train

    base, extra = EXTRA_METHODS.get(method, (method, {}))
    s = Settings(**settings)
    model = sttn_resnet18(width=s.width, blocks=s.blocks, stem="small", input_size=8, in_channels=1,
                          num_classes=10, seed=seed)
    cfg = TrainConfig(method=base, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, seed=seed,
                      fixed_delta=s.fixed_delta, granularity=s.granularity, latent_init=s.latent_init,
                      progress=False, **extra)
    res = train(model, digits(), cfg)
    lh = res.layer_history
    final = lh[lh.epoch == lh.epoch.max()] if len(lh) else lh
    return {"method": method, "seed": seed, "test_accuracy": res.test_accuracy,
            "test_accuracy_float32": res.test_accuracy_float32,
            "train_accuracy": float(res.history.train_acc.iloc[-1]), "seconds": res.seconds,
            "history": res.history.assign(method=method, seed=seed).to_dict("records"),
            "layers": final.assign(method=method, seed=seed).to_dict("records"),
            "layer_history": lh.assign(method=method, seed=seed).to_dict("records")}


def _init_worker():
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")


# --------------------------------------------------------------------------------------
# the comparison


def compare(methods=METHODS, seeds=(0, 1, 2, 3, 4), settings: Settings | None = None, *, workers: int = 2,
            progress: bool = True) -> Comparison:
    """Train every method with every seed (in ``workers`` processes) and tabulate."""
    import multiprocessing as mp

    from tqdm import tqdm  # plain text bar: tqdm.auto warns in Jupyter without ipywidgets

    from sttn_sim.errors import SttnError

    methods, seeds = list(methods), [int(s) for s in seeds]
    unknown = [m for m in methods if m not in METHODS and m not in EXTRA_METHODS]
    if unknown or not methods:
        raise SttnError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS + tuple(EXTRA_METHODS))}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise SttnError(f"seeds {seeds}: expected distinct integers")
    if workers < 1:
        raise SttnError(f"workers={workers}: expected >= 1")
    settings = settings or Settings()
    jobs = [(m, s) for s in seeds for m in methods]
    t0 = time.perf_counter()
    results = []
    # child processes read the thread variables at start-up: one BLAS thread each, so the
    # numbers do not depend on the number of workers
    saved = {v: os.environ.get(v) for v in _THREAD_VARS}
    for v in _THREAD_VARS:
        os.environ[v] = "1"
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = {pool.submit(run_one, m, s, settings.as_dict()): (m, s) for m, s in jobs}
            bar = tqdm(total=len(jobs), desc="soft vs hard", unit="run", disable=not progress)
            for fut in as_completed(futures):
                m, s = futures[fut]
                r = fut.result()
                results.append(r)
                bar.set_postfix_str(f"{SHORT.get(m, m)} seed {s}: {r['test_accuracy']:.4f}")
                bar.update()
            bar.close()
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
    wall = time.perf_counter() - t0
    return tabulate(results, methods, seeds, settings.as_dict(), wall)


def tabulate(results: list[dict], methods, seeds, settings: dict, wall: float) -> Comparison:
    order = {m: i for i, m in enumerate(methods)}
    runs = pd.DataFrame([{k: r[k] for k in ("method", "seed", "test_accuracy", "test_accuracy_float32",
                                             "train_accuracy", "seconds")} for r in results])
    runs = runs.sort_values(["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c)
    runs = runs.reset_index(drop=True)
    layers_all = pd.DataFrame([row for r in results for row in r["layers"]])
    history = pd.DataFrame([row for r in results for row in r["history"]])
    if len(history):
        history = history.sort_values(["method", "seed", "epoch"],
                                      key=lambda c: c.map(order) if c.name == "method" else c).reset_index(drop=True)
    rows = []
    for m in methods:
        acc = runs.loc[runs.method == m, "test_accuracy"].to_numpy()
        lm = layers_all[layers_all.method == m] if len(layers_all) else layers_all
        rows.append({"method": m, "label": LABELS.get(m, m), "seeds": len(acc),
                     "acc_mean": float(acc.mean()), "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                     "acc_min": float(acc.min()), "acc_max": float(acc.max()),
                     "sparsity_mean": float(lm.sparsity.mean()) if len(lm) else np.nan,
                     "l2_rel_mean": float(lm.l2_rel.mean()) if len(lm) else np.nan})
    summary = pd.DataFrame(rows)
    ref = summary.set_index("method").acc_mean
    if "float" in ref:
        summary["gap_to_float"] = summary.acc_mean - ref["float"]
    if "sttn" in ref:
        summary["gap_to_sttn"] = summary.acc_mean - ref["sttn"]
    if len(layers_all):
        cols = [c for c in ("sparsity", "l2_rel", "cosine", "delta", "overlap", "scale_mean") if c in layers_all]
        layer_order = {n: i for i, n in enumerate(dict.fromkeys(layers_all.layer))}
        layers = (layers_all.groupby(["method", "layer"], sort=False)[cols].mean().reset_index()
                  .sort_values(["method", "layer"], key=lambda c: c.map(order) if c.name == "method"
                               else c.map(layer_order)).reset_index(drop=True))
    else:
        layers = pd.DataFrame(columns=["method", "layer"])
    layer_history = pd.DataFrame([row for r in results for row in r.get("layer_history", [])])
    return Comparison(runs, summary, layers, history, dict(settings), list(seeds), wall,
                      layer_history=layer_history)


# --------------------------------------------------------------------------------------
# presentation


def format_table(comp: Comparison) -> str:
    """Markdown tables: accuracy per method, then sparsity / L2 error per layer."""
    lines = [f"Test accuracy on digits (360 test images), {len(comp.seeds)} seeds {comp.seeds}, "
             f"{comp.settings['epochs']} epochs, sttn_resnet18(stem='small', width={comp.settings['width']}, "
             f"blocks={comp.settings['blocks']}); mean ± sample std (ddof=1).", "",
             "| method | test accuracy % | min–max % | Δ vs float (pts) | mean sparsity | mean rel. L2 error |",
             "|---|---|---|---|---|---|"]
    for _, r in comp.summary.iterrows():
        gap = f"{100 * r.gap_to_float:+.2f}" if "gap_to_float" in r and r.method != "float" else "—"
        sp = "—" if np.isnan(r.sparsity_mean) else f"{r.sparsity_mean:.3f}"
        l2 = "—" if np.isnan(r.l2_rel_mean) else f"{r.l2_rel_mean:.3f}"
        lines.append(f"| {r.label} | {100 * r.acc_mean:.2f} ± {100 * r.acc_std:.2f} | "
                     f"{100 * r.acc_min:.2f}–{100 * r.acc_max:.2f} | {gap} | {sp} | {l2} |")
    if len(comp.layers):
        methods = list(dict.fromkeys(comp.layers.method))
        lines += ["", "Per ternary layer (mean over seeds): sparsity / relative L2 error", "",
                  "| layer | " + " | ".join(SHORT.get(m, m) for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for layer in dict.fromkeys(comp.layers.layer):
            cells = []
            for m in methods:
                r = comp.layers[(comp.layers.method == m) & (comp.layers.layer == layer)]
                cells.append("—" if r.empty else f"{r.sparsity.iloc[0]:.2f} / {r.l2_rel.iloc[0]:.3f}")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines += ["", f"wall time {comp.wall_seconds:.0f} s"]
    return "\n".join(lines)


def plot_comparison(comp: Comparison, ax=None):
    """Three panels: accuracy (mean ± std, seeds as dots), per-layer sparsity, per-layer
    L2 error.  ``ax``: None, one Axes (split into three) or three Axes.  Returns the figure."""
    import matplotlib.pyplot as plt

    from .style import METHOD_COLORS, apply_style

    apply_style()
    colors = dict(METHOD_COLORS, float="#17becf", sttn_exact="#555555")
    if ax is None:
        fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.8), layout="constrained",
                                 gridspec_kw={"width_ratios": [1.0, 1.3, 1.3]})
    elif isinstance(ax, (list, tuple, np.ndarray)):
        axes = list(ax)
        fig = axes[0].figure
    else:
        fig = ax.figure
        spec = ax.get_subplotspec().subgridspec(1, 3)
        ax.set_visible(False)
        axes = [fig.add_subplot(spec[0, i]) for i in range(3)]
    a0, a1, a2 = axes
    s = comp.summary
    xs = np.arange(len(s))
    for i, r in s.reset_index(drop=True).iterrows():
        c = colors.get(r.method, "#333333")
        a0.bar(i, 100 * r.acc_mean, yerr=100 * r.acc_std, color=c, alpha=0.35, capsize=4, edgecolor=c)
        pts = comp.runs[comp.runs.method == r.method].test_accuracy.to_numpy() * 100
        a0.plot(np.full(len(pts), i) + np.linspace(-0.15, 0.15, len(pts)), pts, "o", color=c, ms=4)
    a0.set_xticks(xs, [SHORT.get(m, m) for m in s.method], rotation=30)
    lo = max(0.0, 100 * (s.acc_mean - s.acc_std).min() - 2.0)
    a0.set_ylim(lo, 100.5)
    a0.set_ylabel("test accuracy (%)")
    a0.set_title(f"digits, {len(comp.seeds)} seeds, {comp.settings['epochs']} epochs")
    layer_names = list(dict.fromkeys(comp.layers.layer)) if len(comp.layers) else []
    lx = np.arange(len(layer_names))
    for m in dict.fromkeys(comp.layers.method if len(comp.layers) else []):
        d = comp.layers[comp.layers.method == m].set_index("layer").reindex(layer_names)
        kw = dict(color=colors.get(m, "#333333"), marker="o", ms=3, label=SHORT.get(m, m))
        a1.plot(lx, d.sparsity, **kw)
        a2.plot(lx, d.l2_rel, **kw)
    short_names = [n.replace("features.", "f.") for n in layer_names]
    for a, title, ylab in ((a1, "weight sparsity per layer", "fraction of zero codes"),
                           (a2, "quantization error per layer", "||w − ŵ||² / ||w||²")):
        a.set_xticks(lx, short_names, rotation=60, fontsize=7)
        a.set_title(title)
        a.set_ylabel(ylab)
    a1.set_ylim(0, 1)
    a1.legend(fontsize=8)
    return fig


def to_json(comp: Comparison) -> dict:
    return {"settings": comp.settings, "seeds": comp.seeds, "wall_seconds": round(comp.wall_seconds, 1),
            "summary": comp.summary.replace({np.nan: None}).to_dict("records"),
            "runs": comp.runs.to_dict("records"),
            "layers": comp.layers.replace({np.nan: None}).to_dict("records")}


def write_outputs(comp: Comparison, out_dir) -> list:
    from sttn_sim.io.atomic import atomic_path, atomic_write_text, ensure_output_dir

    from .style import save_figure

    out = ensure_output_dir(out_dir)
    written = []
    tables = [("summary", comp.summary), ("runs", comp.runs), ("layers", comp.layers), ("history", comp.history)]
    if comp.layer_history is not None and len(comp.layer_history):
        tables.append(("layer_history", comp.layer_history))
    for name, df in tables:
        path = out / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        written.append(path)
    written.append(atomic_write_text(out / "soft_vs_hard.json", json.dumps(to_json(comp), indent=2)))
    written.append(atomic_write_text(out / "soft_vs_hard.md", format_table(comp) + "\n"))
    import matplotlib.pyplot as plt

    fig = plot_comparison(comp)
    written += save_figure(fig, out, "soft_vs_hard")
    plt.close(fig)
    lh = comp.layer_history
    if lh is not None and len(lh) and (lh.method == "sttn").any():
        from .figures import plot_soft_threshold_evolution

        fig = plot_soft_threshold_evolution(lh[lh.method == "sttn"])
        written += save_figure(fig, out, "soft_threshold_evolution")
        plt.close(fig)
    return written


def main(argv=None) -> int:
    from analysis.style import use_file_backend

    use_file_backend()
    from sttn_sim.errors import SttnError

    p = argparse.ArgumentParser(prog="python -m analysis.soft_vs_hard", description=__doc__.split("\n\n")[0],
                                epilog="Methods: " + ", ".join(f"{m} = {LABELS[m]}" for m in (*METHODS, *EXTRA_METHODS)))
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0,1,2,3,4)")
    d = Settings()
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per run (default {d.epochs})")
    p.add_argument("--width", type=float, default=d.width, help=f"ResNet width multiplier (default {d.width})")
    p.add_argument("--blocks", type=int, default=d.blocks, help=f"BasicBlocks, 1..8 (default {d.blocks})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak Adam learning rate (default {d.lr})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--fixed-delta", type=float, default=d.fixed_delta,
                   help=f"Δ of the fixed-threshold baseline on the latent kernels (default {d.fixed_delta}; "
                        f"the PyTorch init draws |W| <= 1/sqrt(fan_in), 0.06..0.08 here)")
    p.add_argument("--granularity", choices=("channel", "tensor"), default=d.granularity,
                   help="hard-threshold Δ and scales per output channel (like STTN's α) or per tensor")
    p.add_argument("--latent-init", choices=("pytorch", "builder"), default=d.latent_init,
                   help="latent kernels: PyTorch's default layer init U(±1/sqrt(fan_in)) as the official code "
                        "(default), or the builder's N(0, 0.5²)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--out", default="soft_vs_hard_out", help="output folder (default soft_vs_hard_out)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise SttnError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0 or not args.width > 0:
            raise SttnError("--epochs and --batch-size must be >= 1, --lr and --width > 0")
        settings = Settings(epochs=args.epochs, width=args.width, blocks=args.blocks, lr=args.lr,
                            batch_size=args.batch_size, fixed_delta=args.fixed_delta, granularity=args.granularity,
                            latent_init=args.latent_init)
        # fail fast on a bad architecture before starting workers
        from sttn_sim.builders import sttn_resnet18
        sttn_resnet18(width=args.width, blocks=args.blocks, stem="small", input_size=8, in_channels=1, num_classes=10)
        comp = compare(methods, seeds, settings, workers=args.workers, progress=not (args.no_progress or args.json))
        written = write_outputs(comp, args.out)
    except SttnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(comp), indent=2))
    else:
        print(format_table(comp))
        print("wrote:\n  " + "\n  ".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
