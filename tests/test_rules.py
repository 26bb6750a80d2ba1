"""sttn_sim.rules is the one home of the activation rule: the ±0.5 thresholds appear as a
default or a comparison operand nowhere else (other 0.5s — the absmean ratio, rounding,
plot layout — are not activation thresholds and are not flagged)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sttn_sim import rules

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD_NAMES = {"lo", "hi", "act_lo", "act_hi", "activation_lo", "activation_hi", "lo_act", "hi_act"}


def _is_half(node) -> bool:
    """``0.5`` or ``-0.5`` as a literal."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and node.value == 0.5 and not isinstance(node.value, bool)


def activation_half_literals(tree: ast.AST) -> list[int]:
    """Line numbers where ±0.5 is a threshold default or a comparison operand."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(_is_half(v) for v in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults):
                if arg.arg in THRESHOLD_NAMES and _is_half(default):
                    lines.append(default.lineno)
            for arg, default in zip(args.kwonlyargs, args.kw_defaults):
                if default is not None and arg.arg in THRESHOLD_NAMES and _is_half(default):
                    lines.append(default.lineno)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                node.target.id in THRESHOLD_NAMES and node.value is not None and _is_half(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value in THRESHOLD_NAMES and _is_half(value):
                    lines.append(value.lineno)
        elif isinstance(node, ast.Call):
            # attrs.get("lo", -0.5) and keyword arguments lo=-0.5
            if node.args and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and \
                    node.args[0].value in THRESHOLD_NAMES and _is_half(node.args[1]):
                lines.append(node.lineno)
            lines += [k.value.lineno for k in node.keywords if k.arg in THRESHOLD_NAMES and _is_half(k.value)]
    return sorted(lines)


def test_the_scan_finds_what_it_looks_for():
    code = 'def f(x, lo=-0.5):\n    return x >= 0.5, a.get("hi", 0.5), {"lo": -0.5}, g(hi=0.5)\nk = 0.5 * 3\n'
    assert activation_half_literals(ast.parse(code)) == [1, 2, 2, 2, 2]


def test_activation_thresholds_only_in_rules():
    found = {}
    for folder in ("sttn_sim", "analysis"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "sttn_sim" / "rules.py":
                continue
            lines = activation_half_literals(ast.parse(path.read_text(), filename=str(path)))
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}


@pytest.mark.parametrize("tie, at_hi", [("sttn", 1), ("half_even", 0)])
def test_tie_rules_at_the_thresholds(tie, at_hi):
    x = np.array([-0.6, -0.5, -0.4, 0.0, 0.4, 0.5, 0.6])
    codes = rules.ternary_activation(x, tie=tie)
    assert codes.dtype == np.int8
    assert codes.tolist() == [-1, 0, 0, 0, 0, at_hi, 1]


def test_apply_threshold_directions_and_constant():
    x = np.array([[-2.0, -2.0, 5.0], [2.0, 2.0, 5.0]])  # N=2, C=3
    codes = rules.apply_threshold(x, np.array([1, -1, 0]), np.array([-1.0, -1.0, 0.0]),
                                  np.array([1.0, 1.0, 0.0]), np.array([0, 0, -1]))
    # channel 0: z = x; channel 1: z = -x; channel 2: the constant -1
    assert codes.tolist() == [[-1, 1, -1], [1, -1, -1]]


def test_exact_ceil_where_float_division_is_off_by_one():
    # (0.5 - 0.1) / 0.4 is 1.0000000000000002 in float64 -> ceil 2, but exactly
    # (0.5 - fl(0.1)) / fl(0.4) is slightly below... check against Fraction directly
    from fractions import Fraction
    import math

    offset, mag = np.array([0.1]), np.array([0.4])
    want = math.ceil((Fraction(0.5) - Fraction(0.1)) / Fraction(0.4))
    assert rules.exact_ceil(0.5, offset, mag, np.array([1])).tolist() == [want]


def test_float32_thresholds_round_up():
    t = np.array([0.1, 0.5, -0.1, 1e-40])
    t32 = rules.float32_thresholds(t)
    assert np.all(t32.astype(np.float64) >= t)
    below = np.nextafter(t32, np.float32(-np.inf)).astype(np.float64)
    assert np.all(below < t)  # the smallest float32 >= t
