"""``python -m analysis.soft_vs_hard``: does a soft threshold beat a hard Δ? Measured.

Trains the same small official-style STTN ResNet (docs/design.md §2.3 block design,
``sttn_resnet18(stem="small", width, blocks)`` on 8×8 digits) with every trainable
method of the registry (:data:`sttn_sim.train.TRAIN_METHODS`) — STTN (two binary
kernels, no threshold), the hard-threshold baselines TWN (Δ = 0.7·mean|W|), TTQ
(Δ = 0.05·max|W|, learned W_p/W_n), optimal Δ, absmean and fixed Δ, and a
full-precision float model — with identical architecture, initial weights (per seed),
data order, epochs and optimiser, for several seeds, and reports (the latent kernels
start from PyTorch's default layer initialisation, as in the official code, so the
codes are learned rather than inherited from the initial draw):

* test accuracy per method: mean ± sample standard deviation (ddof = 1) over seeds and
  the 95 % confidence interval of the mean, ``mean ± t_{0.975, n-1}·s/√n`` (Student t);
* significance against STTN (:func:`significance`): a paired t-test over the seeds
  (every method starts from the same initial weights and data order per seed, so the
  runs pair by seed) and Welch's unequal-variance t-test, two-sided p-values;
* per ternary layer (mean over seeds): weight sparsity, relative L2 error
  ``||w - ŵ||² / ||w||²`` of the kernel actually used against its float counterpart
  (STTN: w = (W1 + W2)/2 and ŵ = α·t; baselines: the latent kernel and its ternary
  version), cosine similarity, and for STTN the overlap (fraction of codes no hard
  threshold on w reproduces);
* every ternary method's exported model folded and run through the packed engine
  (:class:`sttn_sim.Engine`: STTN, the Δ methods, and TTQ in its asymmetric folded form
  with two exact partial sums): its test accuracy (``test_accuracy_engine``, float32,
  next to the float64 ``test_accuracy``) and its cost table
  (:func:`sttn_sim.stats.layer_costs`: ternary MACs, MACs with a non-zero weight,
  packed bytes); the float model has no ternary layer to run packed (NaN there);
* a figure: accuracy per method (mean with its 95 % CI, every seed as a dot) and the
  per-layer sparsity and L2 error.

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
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats
from tqdm import tqdm

from sttn_sim.builders import sttn_resnet18
from sttn_sim.cli import module_main
from sttn_sim.datasets import digits
from sttn_sim.engine import Engine
from sttn_sim.errors import SttnError
from sttn_sim.fold import fold
from sttn_sim.stats import layer_costs
from sttn_sim.io.atomic import atomic_path, atomic_write_text, ensure_output_dir
from sttn_sim.train import TrainConfig, train
from sttn_sim.train.quant import TRAIN_METHODS

from .figures import plot_soft_threshold_evolution
from .style import MethodAttribute, apply_style, method_style, save_figure, use_file_backend

#: the default methods: every trainable registered method and "float" (a live view)
METHODS = TRAIN_METHODS
#: extra method names accepted by --methods
EXTRA_METHODS = {"sttn_exact": ("sttn", {"sttn_grad": "exact"})}
#: table labels and short labels (tick labels, column headers), from the registry
LABELS = MethodAttribute("label")
SHORT = MethodAttribute("short")
#: the method every other one is tested against
REFERENCE = "sttn"
#: level of the confidence intervals of the mean accuracy
CI_LEVEL = 0.95
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

    base, extra = EXTRA_METHODS.get(method, (method, {}))
    s = Settings(**settings)
    model = sttn_resnet18(width=s.width, blocks=s.blocks, stem="small", input_size=8, in_channels=1,
                          num_classes=10, seed=seed)
    cfg = TrainConfig(method=base, epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, seed=seed,
                      fixed_delta=s.fixed_delta, granularity=s.granularity, latent_init=s.latent_init,
                      progress=False, **extra)
    data = digits()
    res = train(model, data, cfg)
    lh = res.layer_history
    final = lh[lh.epoch == lh.epoch.max()] if len(lh) else lh
    return {"method": method, "seed": seed, "test_accuracy": res.test_accuracy,
            "test_accuracy_float32": res.test_accuracy_float32, **packed_evaluation(res.model, data[2], data[3]),
            "train_accuracy": float(res.history.train_acc.iloc[-1]), "seconds": res.seconds,
            "history": res.history.assign(method=method, seed=seed).to_dict("records"),
            "layers": final.assign(method=method, seed=seed).to_dict("records"),
            "layer_history": lh.assign(method=method, seed=seed).to_dict("records")}


#: the engine columns of a method without ternary layers (the float model)
NO_ENGINE = {"test_accuracy_engine": float("nan"), "ternary_macs": 0, "macs_nonzero_weight": 0, "packed_bytes": 0}


def packed_evaluation(model, x_test, y_test) -> dict:
    """Fold a trained model, run it through the packed engine on the test split, and
    total its cost table: ``test_accuracy_engine``, ``ternary_macs``,
    ``macs_nonzero_weight`` and ``packed_bytes`` (per image)."""
    if not model.ternary_layers():
        return dict(NO_ENGINE)
    folded = fold(model)
    logits = Engine(folded).run(np.ascontiguousarray(x_test, np.float32))
    costs = layer_costs(folded)
    return {"test_accuracy_engine": float(np.mean(logits.argmax(1) == y_test)),
            "ternary_macs": int(costs["macs"].sum()), "macs_nonzero_weight": int(costs["macs_nonzero_weight"].sum()),
            "packed_bytes": int(costs["packed_bytes"].sum())}


def _init_worker():
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")


# --------------------------------------------------------------------------------------
# the comparison


def compare(methods=METHODS, seeds=(0, 1, 2, 3, 4), settings: Settings | None = None, *, workers: int = 2,
            progress: bool = True) -> Comparison:
    """Train every method with every seed (in ``workers`` processes) and tabulate."""
    import multiprocessing as mp



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


# --------------------------------------------------------------------------------------
# statistics over seeds


#: spread below which a sample of accuracies counts as constant: accuracies are image
#: counts over the test set (distinct values differ by >= 1/n_test, ~3e-3 here), while
#: float subtraction leaves ~1e-16 (0.9 - 0.8 != 0.8 - 0.7), which would give |t| ~ 1e15
CONSTANT_SPREAD = 1e-9


def _constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) <= CONSTANT_SPREAD)


@contextmanager
def _exact_moments():
    """Silence scipy's "precision loss" warning for a (nearly) constant sample: both
    tests return NaN before calling scipy when their statistic is undefined, and a
    constant side of Welch's test correctly contributes a variance of (about) 0."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred in moment calculation")
        yield


def mean_confidence_interval(values, level: float = CI_LEVEL) -> tuple[float, float]:
    r"""Confidence interval of the mean of ``values`` (Student t):

    .. math::  \bar x \pm t_{(1+\text{level})/2,\; n-1} \, s / \sqrt n,

    with s the sample standard deviation (ddof = 1). ``(nan, nan)`` for fewer than two
    values; ``(x̄, x̄)`` when all values are equal."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2.0, x.size - 1)) * float(x.std(ddof=1)) / np.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def paired_t_test(a, b) -> tuple[float, float]:
    r"""Two-sided paired t-test of ``a - b`` (the same seeds, in the same order):
    :math:`t = \bar d / (s_d / \sqrt n)` with n - 1 degrees of freedom.
    ``(nan, nan)`` when it is undefined: fewer than two pairs, or differences that are
    all equal (zero variance; equal within :data:`CONSTANT_SPREAD`)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size < 2 or _constant(d):
        return float("nan"), float("nan")
    with _exact_moments():
        res = stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def welch_t_test(a, b) -> tuple[float, float]:
    r"""Two-sided Welch t-test (unequal variances) of mean(a) against mean(b):
    :math:`t = (\bar a - \bar b) / \sqrt{s_a^2/n_a + s_b^2/n_b}` with the
    Welch–Satterthwaite degrees of freedom. ``(nan, nan)`` when undefined: fewer than
    two values on a side, or both sides constant (within :data:`CONSTANT_SPREAD`)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2 or (_constant(a) and _constant(b)):
        return float("nan"), float("nan")
    with _exact_moments():
        res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def significance(runs: pd.DataFrame, reference: str = REFERENCE, level: float = CI_LEVEL) -> pd.DataFrame:
    """Per method (``runs``: one row per method × seed with ``test_accuracy``): the
    ``level`` confidence interval of its mean accuracy (``acc_ci_low``, ``acc_ci_high``)
    and, against ``reference`` (``method − reference``), the paired t-test over the
    seeds both have (``t_paired_vs_<ref>``, ``p_paired_vs_<ref>``, ``pairs_vs_<ref>``)
    and Welch's test (``t_welch_vs_<ref>``, ``p_welch_vs_<ref>``). NaN for the reference
    itself, without a reference, or where a test is undefined (see the tests)."""
    ref = runs[runs.method == reference].set_index("seed").test_accuracy
    rows = []
    for method in dict.fromkeys(runs.method):
        acc = runs[runs.method == method].set_index("seed").test_accuracy
        low, high = mean_confidence_interval(acc.to_numpy(), level)
        row = {"method": method, "acc_ci_low": low, "acc_ci_high": high}
        nan = float("nan")
        t_p = p_p = t_w = p_w = nan
        common = [s for s in acc.index if s in ref.index]
        if method != reference and len(ref):
            t_p, p_p = paired_t_test(acc[common].to_numpy(), ref[common].to_numpy())
            t_w, p_w = welch_t_test(acc.to_numpy(), ref.to_numpy())
        row.update({f"t_paired_vs_{reference}": t_p, f"p_paired_vs_{reference}": p_p,
                    f"pairs_vs_{reference}": len(common) if method != reference else 0,
                    f"t_welch_vs_{reference}": t_w, f"p_welch_vs_{reference}": p_w})
        rows.append(row)
    return pd.DataFrame(rows)


def _engine_summary(runs: pd.DataFrame) -> dict:
    """Mean packed-engine accuracy and mean cost totals of one method's runs."""
    acc = runs.test_accuracy_engine.to_numpy(np.float64)
    return {"acc_engine_mean": float(acc.mean()) if len(acc) and np.isfinite(acc).all() else np.nan,
            "nonzero_weight_mac_fraction": float((runs.macs_nonzero_weight / runs.ternary_macs).mean())
            if len(runs) and (runs.ternary_macs > 0).all() else np.nan,
            "packed_bytes": float(runs.packed_bytes.mean()) if len(runs) else np.nan}


def tabulate(results: list[dict], methods, seeds, settings: dict, wall: float) -> Comparison:
    order = {m: i for i, m in enumerate(methods)}
    columns = ("method", "seed", "test_accuracy", "test_accuracy_float32", "test_accuracy_engine", "ternary_macs",
               "macs_nonzero_weight", "packed_bytes", "train_accuracy", "seconds")
    runs = pd.DataFrame([{k: r.get(k, NO_ENGINE.get(k)) for k in columns} for r in results])
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
                     "l2_rel_mean": float(lm.l2_rel.mean()) if len(lm) else np.nan,
                     **_engine_summary(runs[runs.method == m])})
    summary = pd.DataFrame(rows)
    ref = summary.set_index("method").acc_mean
    if "float" in ref:
        summary["gap_to_float"] = summary.acc_mean - ref["float"]
    if REFERENCE in ref:
        summary[f"gap_to_{REFERENCE}"] = summary.acc_mean - ref[REFERENCE]
    if len(runs):
        summary = summary.merge(significance(runs), on="method", how="left")
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
    ref = SHORT.get(REFERENCE, REFERENCE)
    lines = [f"Test accuracy on digits (360 test images), {len(comp.seeds)} seeds {comp.seeds}, "
             f"{comp.settings['epochs']} epochs, sttn_resnet18(stem='small', width={comp.settings['width']}, "
             f"blocks={comp.settings['blocks']}); mean ± sample std (ddof=1), {100 * CI_LEVEL:.0f} % confidence "
             f"interval of the mean (Student t), two-sided p-values against {ref}: paired t-test over the seeds "
             f"and Welch's t-test.", "",
             f"| method | test accuracy % | {100 * CI_LEVEL:.0f} % CI % | min–max % | Δ vs float (pts) | "
             f"Δ vs {ref} (pts) | p paired | p Welch | mean sparsity | mean rel. L2 error | packed engine % | "
             f"non-zero-weight MACs | packed bytes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def number(value, fmt, scale=1.0):
        return "—" if value is None or not np.isfinite(value) else format(scale * value, fmt)

    for _, r in comp.summary.iterrows():
        gap = f"{100 * r.gap_to_float:+.2f}" if "gap_to_float" in r and r.method != "float" else "—"
        gap_ref = number(r.get(f"gap_to_{REFERENCE}"), "+.2f", 100) if r.method != REFERENCE else "—"
        ci = (f"{100 * r.acc_ci_low:.2f}–{100 * r.acc_ci_high:.2f}"
              if np.isfinite(r.get("acc_ci_low", np.nan)) else "—")
        lines.append(f"| {r.label} | {100 * r.acc_mean:.2f} ± {100 * r.acc_std:.2f} | {ci} | "
                     f"{100 * r.acc_min:.2f}–{100 * r.acc_max:.2f} | {gap} | {gap_ref} | "
                     f"{number(r.get(f'p_paired_vs_{REFERENCE}'), '.3f')} | "
                     f"{number(r.get(f'p_welch_vs_{REFERENCE}'), '.3f')} | "
                     f"{number(r.sparsity_mean, '.3f')} | {number(r.l2_rel_mean, '.3f')} | "
                     f"{number(r.get('acc_engine_mean'), '.2f', 100)} | "
                     f"{number(r.get('nonzero_weight_mac_fraction'), '.3f')} | {number(r.get('packed_bytes'), '.0f')} |")
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
    """Three panels: accuracy (mean with its 95 % confidence interval as the error bar,
    seeds as dots), per-layer sparsity, per-layer L2 error.  ``ax``: None, one Axes
    (split into three) or three Axes.  Returns the figure."""


    apply_style()
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
    low = s.acc_ci_low.where(np.isfinite(s.acc_ci_low), s.acc_mean)
    high = s.acc_ci_high.where(np.isfinite(s.acc_ci_high), s.acc_mean)
    for i, r in s.reset_index(drop=True).iterrows():
        c = method_style(r.method).color
        yerr = 100 * np.array([[r.acc_mean - low.iloc[i]], [high.iloc[i] - r.acc_mean]])
        a0.bar(i, 100 * r.acc_mean, yerr=yerr, color=c, alpha=0.35, capsize=4, edgecolor=c)
        pts = comp.runs[comp.runs.method == r.method].test_accuracy.to_numpy() * 100
        a0.plot(np.full(len(pts), i) + np.linspace(-0.15, 0.15, len(pts)), pts, "o", color=c, ms=4)
    a0.set_xticks(xs, [SHORT.get(m, m) for m in s.method], rotation=30)
    lo = max(0.0, 100 * min(low.min(), comp.runs.test_accuracy.min()) - 2.0)
    a0.set_ylim(lo, 100.5)
    a0.set_ylabel(f"test accuracy (%), mean and {100 * CI_LEVEL:.0f} % CI")
    a0.set_title(f"digits, {len(comp.seeds)} seeds, {comp.settings['epochs']} epochs")
    layer_names = list(dict.fromkeys(comp.layers.layer)) if len(comp.layers) else []
    lx = np.arange(len(layer_names))
    for m in dict.fromkeys(comp.layers.method if len(comp.layers) else []):
        d = comp.layers[comp.layers.method == m].set_index("layer").reindex(layer_names)
        kw = dict(color=method_style(m).color, marker="o", ms=3, label=SHORT.get(m, m))
        a1.plot(lx, d.sparsity, **kw)
        a2.plot(lx, d.l2_rel, **kw)
    short_names = [n.replace("features.", "f.") for n in layer_names]
    for a, title, ylab in ((a1, "weight sparsity per layer", "fraction of zero codes"),
                           (a2, "quantization error per layer", "||w − ŵ||² / ||w||²")):
        a.set_xticks(lx, short_names, rotation=60, fontsize=7)
        a.set_title(title)
        a.set_ylabel(ylab)
    a1.set_ylim(0, 1)
    if a1.get_lines():
        a1.legend(fontsize=8)
    return fig


def to_json(comp: Comparison) -> dict:
    return {"settings": comp.settings, "seeds": comp.seeds, "wall_seconds": round(comp.wall_seconds, 1),
            "summary": comp.summary.replace({np.nan: None}).to_dict("records"),
            "runs": comp.runs.to_dict("records"),
            "layers": comp.layers.replace({np.nan: None}).to_dict("records")}


def write_outputs(comp: Comparison, out_dir) -> list:


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

    fig = plot_comparison(comp)
    written += save_figure(fig, out, "soft_vs_hard")
    plt.close(fig)
    lh = comp.layer_history
    if lh is not None and len(lh) and (lh.method == "sttn").any():

        fig = plot_soft_threshold_evolution(lh[lh.method == "sttn"])
        written += save_figure(fig, out, "soft_threshold_evolution")
        plt.close(fig)
    return written


DESCRIPTION = __doc__.split("\n\n")[0]


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.epilog = "Methods: " + ", ".join(f"{m} = {LABELS[m]}" for m in (*METHODS, *EXTRA_METHODS))
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
    return p


def run(args: argparse.Namespace) -> int:
    use_file_backend()
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
    sttn_resnet18(width=args.width, blocks=args.blocks, stem="small", input_size=8, in_channels=1, num_classes=10)
    comp = compare(methods, seeds, settings, workers=args.workers, progress=not (args.no_progress or args.json))
    written = write_outputs(comp, args.out)
    if args.json:
        print(json.dumps(to_json(comp), indent=2))
    else:
        print(format_table(comp))
        print("wrote:\n  " + "\n  ".join(str(w) for w in written))
    return 0


main = module_main(__name__, "python -m analysis.soft_vs_hard")

if __name__ == "__main__":
    sys.exit(main())
