"""The targets table: each bound read from the right number of a bench result."""

import pandas as pd
import pytest

from sttn_sim.bench.targets import TARGETS, check_targets


def _result(cpu_class="avx512_vpopcntdq", *, gemm=(11.0, 9.5, 12.0, 10.2), b1=(0.30, 0.9, 0.18),
            b8=(0.36, 1.2, 0.2), per_image=0.85, recording=1.101, contention=(0.45, 0.39)):
    def entry(v):
        return {"engine_vs_fastest_fp32": v[0], "engine_vs_pytorch_int8": v[1], "engine_vs_pytorch_fp32": v[2]}
    return {
        "kernels": {"cpu_class": cpu_class},
        "gemm": pd.DataFrame({"ratio": list(gemm)}),
        "end_to_end_summary": {"batch 1": entry(b1), "batch 8": entry(b8),
                               "engine batch 8 vs batch 1, per image": per_image},
        "recording": pd.DataFrame({"batch": [8, 1], "recording_overhead": [recording, 1.5]}),
        "contention": [{"threads": "auto", "ratio": 0.9, "ratio_to_best_idle": contention[0]},
                       {"threads": "auto", "ratio": 0.9, "ratio_to_best_idle": contention[1]},
                       {"threads": "1", "ratio": 0.9, "ratio_to_best_idle": 0.9}],
    }


def test_host_class_verdicts():
    table = check_targets(_result()).set_index("target")
    gemm = table.loc["GEMM vs numpy fp32 (smallest of 4 shapes)"]
    assert gemm["bound"] == ">= 10" and gemm["measured"] == 9.5 and not gemm["met"]  # the smallest shape
    assert table.loc["engine / fastest fp32 runtime, batch 1", "met"]  # 0.30 <= 0.35
    assert not table.loc["engine / fastest fp32 runtime, batch 8", "met"]  # 0.36
    assert table.loc["engine / PyTorch int8, batch 1", "met"]  # 0.9 < 1
    assert not table.loc["engine / PyTorch int8, batch 8", "met"]
    assert table.loc["engine / PyTorch fp32, batch 1", "met"]  # 0.18 <= 0.20
    assert table.loc["batch 8 / batch 1, per image", "met"]  # 0.85 <= 0.85: the bound is inclusive
    assert not table.loc["recording overhead, batch 8", "met"]  # batch 8's 1.101, not batch 1's
    contended = table.loc["contended / best idle throughput, threads=auto"]
    assert contended["measured"] == 0.39 and not contended["met"]  # the worse competitor, auto rows only
    assert len(table) == 9


def test_targets_follow_the_class():
    avx2 = check_targets(_result("avx2", gemm=(6.5, 6.0, 7.0, 8.0)))
    assert list(avx2["target"]).count("GEMM vs numpy fp32 (smallest of 4 shapes)") == 1
    gemm = avx2[avx2["target"].str.startswith("GEMM")].iloc[0]
    assert gemm["bound"] == ">= 6" and gemm["met"]
    assert "engine / PyTorch fp32, batch 1" not in set(avx2["target"])  # a host-class target only
    generic = check_targets(_result("generic"))
    assert not generic["target"].str.startswith("GEMM").any() and len(generic) == 7


@pytest.mark.parametrize("missing", ["gemm", "end_to_end_summary", "recording", "contention"])
def test_unmeasured_targets_are_none(missing):
    result = _result()
    del result[missing]
    table = check_targets(result)
    unmeasured = table[table["met"].isna()]
    assert len(unmeasured) == {"gemm": 1, "end_to_end_summary": 6, "recording": 1, "contention": 1}[missing]
    assert all(v is None for v in unmeasured["measured"])  # None (JSON null), not NaN


def test_every_target_names_a_bound():
    assert {t.op for t in TARGETS} <= {"<=", ">=", "<"}
    assert len({(t.name, t.classes) for t in TARGETS}) == len(TARGETS)
