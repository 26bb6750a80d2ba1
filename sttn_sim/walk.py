"""The one graph walk: run nodes in order, free each value after its last use.

Shared by the reference executor, the packed engine and training.  A node is anything
with a ``name`` and a list of ``inputs`` (names of earlier nodes, or ``"input"``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable


def use_counts(nodes: Iterable) -> dict[str, int]:
    """How many nodes read each value."""
    counts: dict[str, int] = {}
    for node in nodes:
        for src in node.inputs:
            counts[src] = counts.get(src, 0) + 1
    return counts


def walk(nodes: list, inputs: dict[str, Any], execute: Callable[[Any, list], Any], *, output: str,
         keep: bool = False) -> dict[str, Any]:
    """Run ``execute(node, [values of its inputs])`` for every node in order.

    Each node's result is stored under its name.  Unless ``keep``, a value is dropped
    as soon as its last reader has run (the ``output`` is always kept).  Returns the
    values still held: every value with ``keep``, else ``output`` (and unread inputs).
    """
    values = dict(inputs)
    remaining = use_counts(nodes)
    for node in nodes:
        values[node.name] = execute(node, [values[src] for src in node.inputs])
        if keep:
            continue
        for src in node.inputs:
            remaining[src] -= 1
            if remaining[src] == 0 and src != output:
                values.pop(src, None)
    return values
