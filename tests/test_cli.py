"""sttn_sim.cli: one error line for every bad input, bounded sizes, nothing half-written."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from analysis import compare as compare_cmd
from analysis import report as figures_cmd
from analysis.cli import COMMANDS
from analysis.cli import main as sttn
from sttn_sim import verify as verify_cmd
from sttn_sim.cli import MAX_ERROR_CHARS, error_line, run_guarded
from sttn_sim.errors import CheckpointError
from sttn_sim.io import atomic

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_error_line_collapses_whitespace_and_cuts_long_values():
    exc = CheckpointError("f.pth: key 'a\nb\tc' " + "x" * 10_000_000 + " is bad")
    line = error_line(exc)
    assert "\n" not in line and line.startswith("error: f.pth: key 'a b c' xxx")
    assert len(line) == len("error: ") + MAX_ERROR_CHARS and line.endswith("…")


def test_run_guarded_prints_one_line_and_exits_2(capsys):
    def bad(args):
        raise CheckpointError("m.pth: key\n'features.0.weight'\n\nis missing")
    assert run_guarded(bad, argparse.Namespace()) == 2
    assert capsys.readouterr().err == "error: m.pth: key 'features.0.weight' is missing\n"


@pytest.mark.parametrize("argv, needle", [
    (["verify", "--batch", "100000000"], "argument --batch: expected an integer from 1 to 1024, got 100000000"),
    (["figures", "--input-size", "100000"], "argument --input-size: expected an integer from 1 to 2048, got 100000"),
    (["info", str(FIXTURES / "sttn_ter_zip.pth"), "--input-size", "0"], "expected an integer from 1 to 2048, got 0"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_sizes_and_usage_errors_are_one_line(capsys, argv, needle):
    assert sttn(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: sttn") and needle in err


def test_every_command_has_help(capsys):
    for command in COMMANDS:
        assert sttn([command.name, "--help"]) == 0, command.name
        assert "usage: sttn " + command.name in capsys.readouterr().out


def _full_disk(monkeypatch):
    def no_space(path, flags=os.O_RDONLY):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic, "_fsync_path", no_space)


@pytest.mark.parametrize("command, argv, written", [
    (verify_cmd, ["--no-engine", "--model", "ternary_mlp", "--out", "{out}"], "verify_report.json"),
    (compare_cmd, [str(FIXTURES / "sttn_bwx2_zip.pth.tar"), str(FIXTURES / "sttn_ter_zip.pth"), "--out", "{out}"],
     "compare.csv"),
])
def test_a_full_disk_is_one_error_line_and_the_old_file_survives(tmp_path, monkeypatch, capsys, command, argv,
                                                                  written):
    out = tmp_path / "out"
    out.mkdir()
    (out / written).write_text("old report")
    _full_disk(monkeypatch)
    assert command.main([a.format(out=out) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / written}: cannot write file (No space left on device)" in err
    assert (out / written).read_text() == "old report"
    assert sorted(p.name for p in out.iterdir()) == [written]  # no temporary file left


@pytest.mark.slow
def test_a_full_disk_while_saving_figures(tmp_path, monkeypatch, capsys):
    out = tmp_path / "figs"
    out.mkdir()
    (out / "weight_stats.csv").write_text("old table")
    _full_disk(monkeypatch)
    assert figures_cmd.main(["--out", str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write file (No space left on device)" in err
    assert (out / "weight_stats.csv").read_text() == "old table"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
