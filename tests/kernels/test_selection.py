"""Kernel selection per CPU class (sttn_sim.kernels.selection)."""

import numpy as np
import pytest

from sttn_sim.kernels.cpu import CPU_CLASSES, CompileTarget
from sttn_sim.kernels.gemm import TERNARY_KERNELS
from sttn_sim.kernels.selection import (
    CPU_CLASS_ENV,
    KernelSelectionError,
    class_kernels,
    kernel_set,
    runnable_classes,
)


def target(*features, x86=True):
    return CompileTarget("test", frozenset(features), "x86_64-unknown-linux-gnu" if x86 else "aarch64-unknown-linux-gnu",
                         "test")


@pytest.mark.parametrize("t, expected", [
    (target("avx512f", "avx512bw", "avx512vpopcntdq", "avx2", "fma"), ("popcount-zmm-5x16", "fma-zmm-48px-8ch")),
    (target("avx512f", "avx512bw", "avx2", "fma"), ("lut-pshufb-zmm-12x64", "fma-zmm-48px-8ch")),
    (target("avx512f", "avx512bw", "avx512vnni", "avx2", "fma"), ("int8-vnni-zmm-6x64", "fma-zmm-48px-8ch")),
    (target("avx2", "fma"), ("lut-pshufb-ymm-6x64", "fma-ymm-24px-4ch")),
    (target("avx2", "fma", "avxvnni"), ("int8-vnni-ymm-5x16", "fma-ymm-24px-4ch")),
    (target(), ("popcount-generic-4x4", "fma-xmm-12px-3ch")),
    (target("avx2", "fma", x86=False), ("popcount-generic-4x4", "fma-xmm-12px-3ch")),
])
def test_class_kernels_of_each_target(t, expected):
    assert class_kernels(t.cpu_class, t) == expected
    assert TERNARY_KERNELS[expected[0]].available(t)


def test_int8_and_lut_kernels_are_x86_only_and_need_their_features():
    arm = target("avx512bw", "avx512vnni", "avx2", x86=False)
    assert not any(k.available(arm) for k in TERNARY_KERNELS.values() if k.family in ("int8", "lut"))
    assert TERNARY_KERNELS["lut-pshufb-ymm-6x64"].available(target("avx2"))
    assert not TERNARY_KERNELS["lut-pshufb-zmm-12x64"].available(target("avx512f", "avx2"))
    assert TERNARY_KERNELS["popcount-generic-4x4"].available(arm)
    assert not TERNARY_KERNELS["int8-vnni-ymm-5x16"].available(target("avx2", "fma"))
    assert TERNARY_KERNELS["int8-vnni-ymm-5x16"].available(target("avx512vnni", "avx512vl"))
    assert not TERNARY_KERNELS["popcount-zmm-5x16"].available(target("avx2", "fma"))


def test_runnable_classes_include_the_target_and_narrower_ones():
    classes = runnable_classes()
    assert kernel_set().target.cpu_class in classes
    assert "generic" in classes
    assert set(runnable_classes(target("avx2", "fma"))) == {"avx2", "generic"}
    assert runnable_classes(target()) == ["generic"]


def test_override_by_argument_and_environment(monkeypatch):
    monkeypatch.delenv(CPU_CLASS_ENV, raising=False)
    assert kernel_set().cpu_class == kernel_set().target.cpu_class
    assert kernel_set("generic").ternary.name == "popcount-generic-4x4"
    monkeypatch.setenv(CPU_CLASS_ENV, "generic")
    assert kernel_set().cpu_class == "generic"
    assert kernel_set(kernel_set().target.cpu_class).cpu_class != "generic" or \
        kernel_set().target.cpu_class == "generic"  # the argument wins over the environment


def test_bad_class_names_the_argument_or_variable(monkeypatch):
    with pytest.raises(KernelSelectionError, match="cpu_class: expected one of avx512_vpopcntdq, avx512"):
        kernel_set("sse2")
    monkeypatch.setenv(CPU_CLASS_ENV, "neon")
    with pytest.raises(KernelSelectionError, match=f"{CPU_CLASS_ENV}: expected one of"):
        kernel_set()
    with pytest.raises(KernelSelectionError, match="ternary: expected one of"):
        kernel_set("generic", ternary="popcount-9000")


def test_a_class_the_target_cannot_run_is_refused(monkeypatch):
    from sttn_sim.kernels import selection

    monkeypatch.setattr(selection, "compile_target", lambda: target("avx2", "fma"))
    for cpu_class in ("avx512_vpopcntdq", "avx512"):
        with pytest.raises(KernelSelectionError, match=f"cpu_class: kernel .* of class {cpu_class} needs .* lacks"):
            kernel_set(cpu_class)
    assert kernel_set().cpu_class == "avx2"
    assert set(runnable_classes()) | {"avx512_vpopcntdq", "avx512"} == set(CPU_CLASSES)


def test_as_dict_names_class_target_and_kernels():
    d = kernel_set("generic").as_dict()
    assert d["cpu_class"] == "generic" and d["ternary"] == "popcount-generic-4x4" and d["stem"] == "fma-xmm-12px-3ch"
    assert d["target_cpu"] and d["target_class"] in CPU_CLASSES
    assert np.all([isinstance(v, str) for v in d.values()])
