"""``python -m sttn_sim.demo``: the main job on the embedded default model.

Until a trained default model ships, the default is a seeded synthetic official
STTN ResNet-18 at reduced width (random latent kernels, calibrated BN).  The demo
folds it, verifies it against the training-time model and writes to ``--out``:

* ``verify_report.json`` and ``verify_report.txt`` — the bit-exactness report;
* ``weight_stats.csv`` — per-layer -1/0/+1 counts, sparsity, scales, packed size;
* ``weight_sparsity.png`` / ``.pdf`` — the per-layer weight-code figure;
* ``model.safetensors`` — the training-time model in the project's format.
"""

from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm

from .errors import SttnError


def run_demo(out_dir: str = "sttn_out", *, width: float = 0.25, input_size: int = 64, batch: int = 8,
             seed: int = 0, progress: bool = True) -> dict:
    """Run the demo and return a summary dict (paths written, pass/fail, sparsity)."""
    from analysis.figures import plot_weight_sparsity
    from analysis.style import save_figure

    from .fileio import atomic_path, ensure_output_dir
    from .fold import fold
    from .model_io import save_model
    from .stats import weight_statistics
    from .synthetic import synthetic_model
    from .verification import verify_model
    from .verify import write_report

    out = ensure_output_dir(out_dir)
    steps = tqdm(total=5, desc="demo", disable=not progress, unit="step")
    steps.set_postfix_str("building the synthetic STTN ResNet-18")
    model = synthetic_model("sttn_resnet18", seed=seed, width=width, input_size=input_size, num_classes=10)
    steps.update()
    steps.set_postfix_str("folding")
    folded = fold(model)
    steps.update()
    steps.set_postfix_str("verifying")
    report = verify_model(model, folded, batch=batch, seed=seed, engine=True)
    written = write_report(report, out)
    steps.update()
    steps.set_postfix_str("statistics and figure")
    stats = weight_statistics(folded)
    with atomic_path(out / "weight_stats.csv") as tmp:
        stats.to_csv(tmp, index=False)
    written.append(out / "weight_stats.csv")
    fig = plot_weight_sparsity(stats, title=f"Synthetic STTN ResNet-18 (width {width}): weight codes per layer")
    written += save_figure(fig, out, "weight_sparsity")
    steps.update()
    steps.set_postfix_str("saving the model")
    written.append(save_model(model, out / "model.safetensors", {"note": "seeded synthetic model of sttn_sim.demo"}))
    steps.update()
    steps.close()
    return {
        "model": f"synthetic sttn_resnet18 width={width} input={input_size} seed={seed}",
        "verification_passed": report.passed,
        "ternary_layers": int(len(stats)),
        "mean_weight_sparsity": float(stats["sparsity"].mean()),
        "written": [str(p) for p in written],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sttn_sim.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="sttn_out", help="output folder (default sttn_out)")
    p.add_argument("--width", type=float, default=0.25, help="width multiplier of the synthetic ResNet-18")
    p.add_argument("--input-size", type=int, default=64, help="input size of the synthetic ResNet-18")
    p.add_argument("--batch", type=int, default=8, help="verification batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    try:
        summary = run_demo(args.out, width=args.width, input_size=args.input_size, batch=args.batch,
                           seed=args.seed, progress=not args.json)
    except SttnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['model']}: verification {'PASSED' if summary['verification_passed'] else 'FAILED'}; "
              f"{summary['ternary_layers']} ternary layers, mean weight sparsity {summary['mean_weight_sparsity']:.3f}")
        print("wrote:\n  " + "\n  ".join(summary["written"]))
    return 0 if summary["verification_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
