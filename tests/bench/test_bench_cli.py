"""``python -m sttn_sim.bench``: options, the reusable parser pieces, output plumbing
(the benchmarks themselves are replaced by stand-ins; no wall-clock assertion)."""

import argparse
import json
import subprocess
import sys

import pandas as pd
import pytest

from sttn_sim.bench import add_arguments, build_parser, main, run
from sttn_sim.bench import cli

ALL_SKIPPED = ["--skip-gemm", "--skip-end-to-end", "--skip-recording"]


def test_help_lists_the_options():
    proc = subprocess.run([sys.executable, "-m", "sttn_sim.bench", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m sttn_sim.bench")
    for option in ["--repeats", "--json", "--threads", "--target", "--contention"] + ALL_SKIPPED:
        assert option in proc.stdout


def test_the_options_can_be_added_to_a_subcommand():
    parser = argparse.ArgumentParser(prog="sttn")
    add_arguments(parser.add_subparsers(dest="command").add_parser("bench"))
    args = parser.parse_args(["bench", "--repeats", "3", "--skip-gemm", "--json"])
    assert (args.command, args.repeats, args.skip_gemm, args.skip_recording, args.json) == ("bench", 3, True, False, True)
    assert build_parser().parse_args([]).repeats == 20


def test_repeats_below_one_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--repeats", "0"])
    assert exc.value.code == 2
    assert "argument --repeats: expected an integer >= 1, got 0" in capsys.readouterr().err


@pytest.fixture
def stand_ins(monkeypatch):
    """Stand-in benchmarks that record the repeats they were given."""
    calls = {}

    def table(name, **columns):
        def bench(*args, **kwargs):
            calls[name] = args, kwargs
            return pd.DataFrame(columns)
        return bench
    monkeypatch.setattr(cli, "benchmark_gemm", table("gemm", shape=["s"], ratio=[10.0]))
    monkeypatch.setattr(cli, "benchmark_end_to_end",
                        table("end_to_end", batch=[1, 1], runtime=["engine", "pytorch_int8"], ms=[3.5, 7.0],
                              ms_per_image=[3.5, 7.0]))
    monkeypatch.setattr(cli, "benchmark_recording", table("recording", batch=[8], recording_overhead=[1.1]))
    monkeypatch.setattr(cli, "benchmark_contention", table("contention", competitor=["busy"], ratio=[0.6]))
    return calls


def test_json_output_holds_every_table_as_records(stand_ins, capsys):
    assert main(["--repeats", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"kernels", "threads", "warnings", "gemm", "end_to_end", "end_to_end_summary", "recording",
                        "targets"}
    verdicts = {row["target"]: row["met"] for row in out["targets"]}
    assert verdicts["engine / PyTorch int8, batch 1"] is True  # 0.5 < 1
    assert verdicts["recording overhead, batch 8"] is True  # 1.1 <= 1.10
    assert verdicts["batch 8 / batch 1, per image"] is None  # not in the stand-in summary
    assert out["kernels"]["cpu_class"] and out["kernels"]["ternary"]
    assert out["gemm"] == [{"shape": "s", "ratio": 10.0}]
    assert out["end_to_end"][0] == {"batch": 1, "runtime": "engine", "ms": 3.5, "ms_per_image": 3.5}
    assert out["end_to_end_summary"] == {"batch 1": {"engine_vs_pytorch_int8": 0.5}}
    assert out["recording"] == [{"batch": 8, "recording_overhead": 1.1}]
    assert stand_ins["gemm"][1] == {"repeats": 12}
    assert stand_ins["end_to_end"][0] == (12,) and stand_ins["end_to_end"][1]["threads"] == "auto"
    assert stand_ins["recording"][0] == (6,)  # max(5, repeats // 2)
    assert "contention" not in stand_ins


def test_threads_and_contention_options(stand_ins, capsys):
    assert main(ALL_SKIPPED + ["--threads", "1", "--contention", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["contention"] == [{"competitor": "busy", "ratio": 0.6}]
    assert all(row["met"] is None for row in out["targets"])  # nothing measured with the auto threads
    with pytest.raises(SystemExit):
        main(["--threads", "0"])
    assert "argument --threads" in capsys.readouterr().err


def test_target_reruns_the_benchmark_compiled_for_the_class(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    assert main(["--target", "avx2", "--repeats", "4", "--skip-gemm", "--json"]) == 0
    (command, env), = calls
    assert command[1:3] == ["-m", "sttn_sim.bench"] and "--target" not in command
    assert command[3:] == ["--repeats", "4", "--threads", "auto", "--skip-gemm", "--json"]
    assert (env["NUMBA_CPU_NAME"], env["NUMBA_CPU_FEATURES"]) == ("haswell", "")
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env[cli.TARGET_ENV] == "avx2"
    assert env["NUMBA_CACHE_DIR"].endswith("avx2") and "STTN_CPU_CLASS" not in env
    calls.clear()  # every other option reaches the re-run
    assert main(["--target", "generic", "--contention", "--evaluate", "--skip-recording"]) == 0
    (command, env), = calls
    assert command[3:] == ["--repeats", "20", "--threads", "auto", "--skip-recording", "--contention", "--evaluate"]


def test_text_output_prints_the_tables_and_the_kernels(stand_ins, capsys):
    assert run(build_parser().parse_args(["--skip-recording"])) == 0
    out = capsys.readouterr().out
    assert "threads: {" in out and "recording" not in stand_ins
    assert "CPU class " in out and "ternary kernel " in out
    assert "pytorch_int8" in out and '"engine_vs_pytorch_int8": 0.5' in out


def test_everything_skipped_prints_only_the_machine_report(capsys):
    assert main(ALL_SKIPPED + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"kernels", "threads", "warnings", "targets"} and out["threads"]["numba_threads"] >= 1
    assert out["targets"] and all(row["met"] is None and row["measured"] is None for row in out["targets"])
