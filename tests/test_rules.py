"""sttn_sim.rules is the one home of the activation rule: the ±0.5 thresholds appear as a
default or a comparison operand nowhere else (other 0.5s — the absmean ratio, rounding,
plot layout — are not activation thresholds and are not flagged)."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------------------
# the half_even tie rule (QONNX Quant) in folded and comparison thresholds


def _fractions_rule(z, lo, hi, tie):
    """The rule on exact rationals: independent of numpy's comparisons."""
    from fractions import Fraction

    z, lo, hi = Fraction(z), Fraction(lo), Fraction(hi)
    plus = z > hi if tie == "half_even" else z >= hi
    return int(plus) - int(z < lo)


@pytest.mark.parametrize("tie", rules.TIE_RULES)
@pytest.mark.parametrize("gain, offset", [(0.4, 0.1), (-0.25, 0.125), (1 / 3, -0.2), (2.0, 0.5), (0.5, 0.0)])
def test_integer_thresholds_under_both_tie_rules_on_every_integer(tie, gain, offset):
    """Integer thresholds (ceil for lo, ceil / exact floor for a strict hi), turned into the
    canonical >= form, give the rule of y = gain·z + offset on every integer accumulator,
    checked with exact rationals (dyadic gains hit the thresholds exactly: the ties)."""
    from fractions import Fraction

    direction, lo, hi, constant = rules.thresholds_from_affine(np.array([gain]), np.array([offset]),
                                                               integer=True, tie=tie)
    lo_c, hi_c = rules.comparison_thresholds(lo, hi, integer=True, tie=tie)
    acc = np.arange(-40, 41, dtype=np.int64)
    got = rules.apply_threshold(acc.reshape(-1, 1), direction, lo, hi, constant, tie=tie).reshape(-1)
    z = acc * int(direction[0])
    canonical = (z >= int(hi_c[0])).astype(int) - (z < int(lo_c[0])).astype(int)
    want = [_fractions_rule(Fraction(gain) * int(a) + Fraction(offset), rules.ACTIVATION_LO, rules.ACTIVATION_HI, tie)
            for a in acc]
    assert got.tolist() == want
    assert canonical.tolist() == want


def test_half_even_ties_at_integer_accumulators():
    # y = 0.25·acc: y = 0.5 exactly at acc = 2: sttn gives +1, half_even gives 0
    for tie, at_two in (("sttn", 1), ("half_even", 0)):
        d, lo, hi, c = rules.thresholds_from_affine(np.array([0.25]), np.array([0.0]), integer=True, tie=tie)
        codes = rules.apply_threshold(np.array([[1], [2], [3]], np.int64), d, lo, hi, c, tie=tie)
        assert codes.reshape(-1).tolist() == [0, at_two, 1]


@given(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-3, 3))
@settings(max_examples=200, deadline=None)
def test_strict_float32_threshold_is_the_next_float32_above(t, ulps):
    """``z > t ⟺ z >= t⁺`` for float32 z near t (t⁺: smallest float32 > t)."""
    t_plus = rules.float32_thresholds(np.array([t]), strict=True)[0]
    assert float(t_plus) > t and float(np.nextafter(t_plus, np.float32(-np.inf))) <= t
    z = np.float32(t)
    for _ in range(abs(ulps)):
        z = np.nextafter(z, np.float32(np.inf if ulps > 0 else -np.inf))
    assert (float(z) > t) == bool(z >= t_plus)


def test_comparison_thresholds_keep_sttn_and_shift_half_even():
    lo, hi = np.array([-3, 0]), np.array([2, 7])
    assert [a.tolist() for a in rules.comparison_thresholds(lo, hi, integer=True)] == [[-3, 0], [2, 7]]
    assert [a.tolist() for a in rules.comparison_thresholds(lo, hi, integer=True, tie="half_even")] == [[-3, 0],
                                                                                                       [3, 8]]
    lo32, hi32 = rules.comparison_thresholds(np.array([0.1]), np.array([0.5]), integer=False, tie="half_even")
    assert float(hi32[0]) == float(np.nextafter(np.float32(0.5), np.float32(1)))
    assert float(lo32[0]) == float(np.float32(0.1))  # float32(0.1) > 0.1 already
    with pytest.raises(ValueError, match="tie rule 'round'"):
        rules.comparison_thresholds(lo, hi, integer=True, tie="round")


def test_constant_thresholds_give_the_constant_at_zero():
    lo, hi = rules.constant_thresholds(np.array([-1, 0, 1]))
    codes = (0.0 >= hi).astype(int) - (0.0 < lo).astype(int)
    assert codes.tolist() == [-1, 0, 1]


def test_midpoint_thresholds_are_exact_with_errors_below_half_a_scale():
    s, b = 0.37, -1.25
    t = np.array([-2, 0, 3])
    m = rules.midpoint_thresholds(t, s, b)
    for acc in range(-6, 7):
        for err in (-0.49 * s, 0.0, 0.49 * s):  # any error below s/2
            y = s * acc + b + err
            assert ((y >= m) == (acc >= t)).all() and ((y < m) == (acc < t)).all()


def test_quant_ternary_bounds_are_half_the_scale():
    lo, hi = rules.quant_ternary_bounds(np.float32(0.3))
    assert lo == -float(np.float32(0.3)) / 2 and hi == float(np.float32(0.3)) / 2
    # q = clip(round_half_even(x/s), -1, 1) at the ties x = ±s/2 and around them
    s = 0.75
    x = np.array([-0.376, -0.375, 0.0, 0.375, 0.376]) * 1.0
    codes = rules.ternary_activation(x, *rules.quant_ternary_bounds(s), tie="half_even")
    assert codes.tolist() == np.clip(np.round(x / s), -1, 1).astype(int).tolist() == [-1, 0, 0, 0, 1]


def test_float32_sum_error_bound_covers_a_float32_sum():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000).astype(np.float32)
    exact = float(np.sum(a.astype(np.float64)))
    assert abs(float(np.sum(a, dtype=np.float32)) - exact) <= rules.float32_sum_error_bound(a.size, np.abs(a).sum())


def test_batchnorm_inference_is_the_formula_and_the_affine_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    mean, gamma, beta = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
    var = rng.uniform(0.1, 2.0, 3).astype(np.float32)
    y = rules.batchnorm_inference(x, mean, var, gamma, beta, 1e-3)
    c = lambda v: np.asarray(v, np.float64).reshape(1, -1, 1, 1)
    assert y.dtype == np.float64
    assert np.array_equal(y, (x.astype(np.float64) - c(mean)) / np.sqrt(c(var) + 1e-3) * c(gamma) + c(beta))

    bn = SimpleNamespace(name="bn", attrs={"eps": 1e-3},
                         params={"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var})
    g, h = rules.batchnorm_affine(bn)
    np.testing.assert_allclose(y, x * c(g) + c(h), rtol=1e-12, atol=1e-12)
    assert rules.batchnorm_inference(x[:, :, 0, 0], mean, var, gamma, beta).shape == (2, 3)  # (N, C) too


def test_batchnorm_std_keeps_the_dtype():
    var = np.array([0.25, 1.0], np.float32)
    assert rules.batchnorm_std(var, 0.0).dtype == np.float32 and rules.batchnorm_std(var, 0.0).tolist() == [0.5, 1.0]
    assert rules.batchnorm_std(var.astype(np.float64)).dtype == np.float64
    assert rules.batchnorm_std(np.float64(4.0)) == np.sqrt(4.0 + 1e-5)  # the default eps is BN_EPS


def test_sttn_scale_is_twice_alpha():
    rng = np.random.default_rng(1)
    w1, w2 = rng.uniform(-1, 1, (4, 2, 3, 3)), rng.uniform(-1, 1, (4, 2, 3, 3))
    assert np.array_equal(rules.sttn_scale(w1, w2), 2.0 * rules.sttn_alpha(w1, w2))


@pytest.mark.parametrize("size,kernel,stride,padding", [(7, 3, 1, 1), (8, 3, 2, 1), (224, 7, 2, 3), (5, 5, 1, 0),
                                                        (9, 2, 3, 0), (4, 3, 2, 1)])
def test_conv_output_size_counts_the_windows(size, kernel, stride, padding):
    windows = np.lib.stride_tricks.sliding_window_view(np.zeros(size + 2 * padding), kernel)[::stride]
    assert rules.conv_output_size(size, kernel, stride, padding) == len(windows)


def _contains(node, predicate) -> bool:
    return any(predicate(n) for n in ast.walk(node))


def _is_window_size(node) -> bool:
    """``(… 2·p …) // s + 1``."""
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and \
        isinstance(node.right, ast.Constant) and node.right.value == 1 and \
        isinstance(node.left, ast.BinOp) and isinstance(node.left.op, ast.FloorDiv) and \
        _contains(node.left.left, lambda n: isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult) and
                  any(isinstance(v, ast.Constant) and v.value == 2 for v in (n.left, n.right)))


def _is_bn_std(node) -> bool:
    """``sqrt(… eps …)``."""
    return isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "sqrt" and \
        bool(node.args) and _contains(node.args[0], lambda n: isinstance(n, ast.Name) and "eps" in n.id.lower())


def size_and_bn_copies(tree: ast.AST) -> list[int]:
    """Line numbers of ``(… 2·p …) // s + 1`` (a window output size) and of
    ``sqrt(… + eps)`` (a BatchNorm standard deviation) written out."""
    return sorted(node.lineno for node in ast.walk(tree) if _is_window_size(node) or _is_bn_std(node))


def test_the_size_and_bn_scan_finds_what_it_looks_for():
    code = "o = (n + 2 * p - k) // s + 1\ny = np.sqrt(var + eps)\nz = math.sqrt(v + self_eps)\nq = (n + 1) // 2 + 1\n"
    assert size_and_bn_copies(ast.parse(code)) == [1, 2, 3]


def test_window_sizes_and_batchnorm_only_in_rules():
    """The window output size and sqrt(var + eps) are written only in rules.py (the numba
    kernels in sttn_sim/kernels/ may inline them)."""
    found = {}
    for folder in ("sttn_sim", "analysis"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "sttn_sim" / "rules.py" or (ROOT / "sttn_sim" / "kernels") in path.parents:
                continue
            lines = size_and_bn_copies(ast.parse(path.read_text(), filename=str(path)))
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}
