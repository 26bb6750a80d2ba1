"""sttn_sim.evaluation.tally: the top-k rule against a stable sort, exact counts, merging."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sttn_sim.errors import SttnError
from sttn_sim.evaluation import Tally, topk_hits
from sttn_sim.images import SkippedImage


def _by_sort(logits, labels, k):
    # independent rule: a stable descending sort (ties keep class order), label within the first k
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return np.array([y in row for y, row in zip(labels, order)])


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7), st.integers(1, 9), st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_topk_hits_is_the_stable_sort_rule(n, classes, k, seed):
    rng = np.random.default_rng(seed)
    logits = rng.integers(-2, 3, size=(n, classes)).astype(np.float32)  # many ties
    labels = rng.integers(0, classes, size=n)
    assert np.array_equal(topk_hits(logits, labels, k), _by_sort(logits, labels, k))


def test_top1_is_argmax():
    logits = np.array([[1.0, 3.0, 3.0], [0.0, 0.0, 0.0], [5.0, 1.0, 2.0]])
    assert topk_hits(logits, np.array([1, 2, 0]), 1).tolist() == [True, False, True]
    assert topk_hits(logits, np.array([2, 2, 2]), 2).tolist() == [True, False, True]
    assert topk_hits(logits, np.array([2, 2, 1]), 2).tolist() == [True, False, False]


def test_counts_per_class_and_merge():
    logits = np.eye(4)[[0, 1, 1, 3, 2]] + 0.1 * np.arange(4)  # predictions 0, 1, 1, 3, 2
    labels = np.array([0, 1, 2, 3, 3])
    t = Tally(4, k=2)
    t.add_logits(logits[:3], labels[:3])
    u = Tally(4, k=2)
    u.add_logits(logits[3:], labels[3:])
    u.skipped.append(SkippedImage(7, "x.png", "truncated"))
    both = t + u
    assert both.images.tolist() == [1, 1, 1, 2] and both.evaluated == 5
    assert both.top1.tolist() == [1, 1, 0, 1]
    # top-2: image 2 has logits (0, 1.1, 0.2, 0.3): its label 2 ranks third (miss); image 4 has
    # (0, 0.1, 1.2, 0.3): its label 3 ranks second (hit)
    assert both.topk.tolist() == [1, 1, 0, 2]
    assert [s.id for s in both.skipped] == ["x.png"]
    one = Tally(4, k=2)
    one.add_logits(logits, labels)
    one.skipped.append(SkippedImage(7, "x.png", "truncated"))
    assert one == both
    with pytest.raises(SttnError, match="cannot merge"):
        _ = t + Tally(5, k=2)
    with pytest.raises(SttnError, match="logits of shape"):
        t.add_logits(logits[:, :3], labels)
