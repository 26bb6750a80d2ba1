"""The compile target and its CPU class (sttn_sim.kernels.cpu)."""

import llvmlite.binding as llvm
import pytest

from sttn_sim.kernels.cpu import (
    CLASS_FEATURES,
    CPU_CLASSES,
    STAND_INS,
    classify,
    compile_target,
    parse_features,
    probe_features,
)


def test_parse_features_keeps_only_enabled_ones():
    assert parse_features("+avx2,-avx512f,+fma,,-sse4a") == {"avx2", "fma"}
    assert parse_features("") == frozenset()


@pytest.mark.parametrize("features, expected", [
    ({"avx512f", "avx512bw", "avx512vpopcntdq", "avx2", "fma"}, "avx512_vpopcntdq"),
    ({"avx512f", "avx512bw", "avx2", "fma"}, "avx512"),
    ({"avx512f", "avx2", "fma"}, "avx2"),  # AVX-512F without BW (Knights Landing): no byte ops
    ({"avx2", "fma"}, "avx2"),
    ({"avx2"}, "generic"),
    ({"sse4.2", "popcnt"}, "generic"),
    (set(), "generic"),
])
def test_classify(features, expected):
    assert classify(features) == expected
    assert classify(features, is_x86=False) == "generic"


def test_every_class_has_its_features_and_a_description():
    assert list(CLASS_FEATURES) == list(CPU_CLASSES)
    for name, needed in CLASS_FEATURES.items():
        assert classify(needed) == name


@pytest.mark.parametrize("cpu_name, expected", [
    ("haswell", {"avx2", "fma"}),
    ("znver3", {"avx2", "fma"}),  # the AVX2 laptop: no AVX-512
    ("skylake-avx512", {"avx2", "fma", "avx512f", "avx512bw"}),
    ("icelake-server", {"avx2", "fma", "avx512f", "avx512bw", "avx512vpopcntdq"}),
    ("generic", set()),
])
def test_probe_reads_a_named_cpu_from_the_instructions_llvm_emits(cpu_name, expected):
    if llvm.get_process_triple().split("-")[0] != "x86_64":
        expected = set()  # the probe asks the native target about x86 names: none match
    assert probe_features(cpu_name) == expected


@pytest.mark.parametrize("cpu_class", list(STAND_INS))
def test_each_stand_in_is_its_class(cpu_class):
    name, features = STAND_INS[cpu_class]
    assert classify(probe_features(name, features)) == cpu_class


def test_host_target_agrees_with_llvmlite(monkeypatch):
    monkeypatch.delenv("NUMBA_CPU_NAME", raising=False)
    monkeypatch.delenv("NUMBA_CPU_FEATURES", raising=False)
    target = compile_target()
    assert target.cpu_name == llvm.get_host_cpu_name()
    assert target.source == "host"
    host = parse_features(llvm.get_host_cpu_features().flatten())
    assert target.features == host
    # the probe of the host's own name and features agrees on every probed feature
    probed = probe_features(target.cpu_name, llvm.get_host_cpu_features().flatten())
    assert probed == host & {"avx512f", "avx512bw", "avx512vpopcntdq", "avx2", "fma"}


def test_environment_override_is_read_like_numba(monkeypatch):
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "")
    try:
        target = compile_target()
        assert (target.cpu_name, target.cpu_class) == ("haswell", "avx2")
        assert "NUMBA_CPU_FEATURES=''" in target.source
        monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2,+fma,+avxvnni")
        assert compile_target().features == {"avx2", "fma", "avxvnni"}
    finally:
        monkeypatch.undo()
        compile_target()  # numba's config back to this process's real target
