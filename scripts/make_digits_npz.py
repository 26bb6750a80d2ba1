"""Generate ``sttn_sim/data/digits.npz`` from scikit-learn's bundled handwritten digits.

Run ONCE, in a throwaway environment (scikit-learn is not a dependency of sttn_sim)::

    python3 -m venv /tmp/skvenv && /tmp/skvenv/bin/pip install scikit-learn numpy
    /tmp/skvenv/bin/python scripts/make_digits_npz.py            # writes sttn_sim/data/digits.npz

The file holds (all small, ~20 kB compressed):

* ``images``  uint8 [1797, 8, 8], grey levels 0..16 exactly as ``load_digits`` has them;
* ``labels``  uint8 [1797], digits 0..9;
* ``split``   uint8 [1797], 0 = train, 1 = test: a fixed stratified split with
  ``TEST_PER_CLASS`` test images of every digit chosen with ``numpy.random.default_rng(SEED)``
  (360 test, 1437 train);
* ``source``  a short text describing where the data came from.

The split is computed here with NumPy only, so it does not depend on scikit-learn's
``train_test_split`` implementation; rerunning the script reproduces the file byte for
byte for the same scikit-learn data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEED = 20240601
TEST_PER_CLASS = 36


def stratified_split(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """0/1 split array with exactly ``per_class`` test items of every label."""
    rng = np.random.default_rng(seed)
    split = np.zeros(labels.shape[0], np.uint8)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        split[rng.choice(idx, size=per_class, replace=False)] = 1
    return split


def main(argv=None) -> int:
    from sklearn import __version__ as sk_version
    from sklearn.datasets import load_digits

    default_out = Path(__file__).resolve().parents[1] / "sttn_sim" / "data" / "digits.npz"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=default_out, help=f"output file (default {default_out})")
    args = p.parse_args(argv)

    d = load_digits()
    images = np.asarray(d.images)
    if not (np.all(images == np.round(images)) and images.min() >= 0 and images.max() <= 16):
        raise SystemExit("load_digits returned non-integer grey levels or values outside 0..16")
    images = images.astype(np.uint8)
    labels = np.asarray(d.target).astype(np.uint8)
    split = stratified_split(labels, TEST_PER_CLASS, SEED)
    source = (f"scikit-learn {sk_version} sklearn.datasets.load_digits (UCI ML hand-written digits, "
              f"8x8, grey levels 0..16); split: {TEST_PER_CLASS} test images per digit, "
              f"numpy.random.default_rng({SEED}), scripts/make_digits_npz.py")
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels, split=split, source=np.array(source))
    tmp.replace(args.out)
    print(f"wrote {args.out}: {images.shape[0]} images, {int(split.sum())} test, {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
