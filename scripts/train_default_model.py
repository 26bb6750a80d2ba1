"""Train the embedded default model: a small official-style STTN ResNet on the digits.

    .venv/bin/python scripts/train_default_model.py            # writes sttn_sim/data/default_model.safetensors

Architecture: ``sttn_resnet18(stem="small", width=0.25, blocks=4, input_size=8,
in_channels=1, num_classes=10)`` — the docs/design.md §2.3 block design (BN → ternary
activation → STTN conv → BN → add → PReLU, maxpool + zero-channel shortcut on the
downsampling block) at base width 16 with four BasicBlocks (16, 16, 32, 32 channels),
a float 3×3 stem and a float classifier.  Trained with STTN (official gradient),
Adam + cosine schedule, latent kernels drawn from PyTorch's default layer initialisation
(as the official code starts), on the shipped digits split, one BLAS thread
(deterministic).

Before writing, the script checks that the saved model folds, verifies bit-exactly,
and that ``reference_forward(fold(model), x_test)`` gives exactly the training-time
(float64) accuracy; it refuses to write otherwise.  The file is written atomically.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported: deterministic BLAS sums

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "sttn_sim" / "data" / "default_model.safetensors"


def main(argv=None) -> int:
    from sttn_sim.builders import sttn_resnet18
    from sttn_sim.datasets import digits
    from sttn_sim.errors import SttnError
    from sttn_sim.fold import fold
    from sttn_sim.io import load_checkpoint, save_model
    from sttn_sim.reference import reference_forward
    from sttn_sim.train import TrainConfig, train
    from sttn_sim.check import verify_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sttn-grad", choices=("official", "exact"), default="official")
    p.add_argument("--latent-init", choices=("pytorch", "builder"), default="pytorch",
                   help="latent kernels from PyTorch's default layer init (as the official code; default) "
                        "or the builder's draw")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    args = p.parse_args(argv)
    command = ("python scripts/train_default_model.py " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in vars(args).items() if k != "out"))

    try:
        x_tr, y_tr, x_te, y_te = data = digits()
        model = sttn_resnet18(width=args.width, blocks=args.blocks, stem="small", input_size=8, in_channels=1,
                              num_classes=10, seed=args.seed)
        cfg = TrainConfig(method="sttn", epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                          sttn_grad=args.sttn_grad, latent_init=args.latent_init)
        res = train(model, data, cfg, command=command)
        trained = res.model
        trained.metadata.update({
            "dataset": "digits (sttn_sim.datasets.digits: scikit-learn load_digits, fixed split 1437/360)",
            "architecture": f"sttn_resnet18(stem='small', width={args.width}, blocks={args.blocks}, input_size=8, "
                            f"in_channels=1, num_classes=10)",
            "test_accuracy_history": [round(float(a), 6) for a in res.history.test_acc],
            "note": "embedded default model of sttn_sim; test_accuracy is the training-time float64 evaluation",
        })
        folded = fold(trained)
        report = verify_model(trained, folded, x=x_te[:64].astype(np.float64))
        acc_ref = float(np.mean(reference_forward(folded, x_te.astype(np.float64)).argmax(1) == y_te))
        print(f"test accuracy: training-time (float64) {res.test_accuracy:.4f}, float32 {res.test_accuracy_float32:.4f}, "
              f"folded reference {acc_ref:.4f}; verification {'PASSED' if report.passed else 'FAILED'}")
        if acc_ref != res.test_accuracy or not report.passed:
            print("error: the folded model does not reproduce the training-time model; not writing", file=sys.stderr)
            return 1
        save_model(trained, args.out)
        back = load_checkpoint(args.out)
        assert back.metadata["test_accuracy"] == res.test_accuracy
    except SttnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) in {res.seconds:.0f} s of training")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
