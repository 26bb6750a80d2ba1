"""environment.yml and pyproject.toml declare the same dependencies; CI runs the README's command."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _split(spec: str) -> tuple[str, str]:
    name, constraint = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec).groups()
    return name.lower().replace("_", "-"), constraint.replace(" ", "")


def _is_own_extra(spec: str) -> bool:
    """``sttn_sim[extra]``: one extra of this package including another."""
    return spec.startswith("sttn_sim[")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_split(s) for s in project["dependencies"])
    for extra in ("test", "notebooks", "interop"):
        wanted.update(_split(s) for s in project["optional-dependencies"][extra] if not _is_own_extra(s))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = dict(_split(s) for s in env["dependencies"] if isinstance(s, str))
    python = conda.pop("python")
    conda.pop("pip")
    # packages conda-forge names differently (torch, pinned with ==) come from PyPI in the pip: section
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1
    pip = dict(_split(s) for s in pip_lists[0] if not s.startswith("-"))
    assert "-e ." in pip_lists[0]
    assert not set(conda) & set(pip), "a package is listed both for conda and for pip"
    assert {**conda, **pip} == wanted
    assert wanted["torch"] == "==2.13.0"  # the CPU build installed for the interop tests
    interop = dict(_split(s) for s in project["optional-dependencies"]["interop"])
    assert set(interop) == {"onnx", "onnxruntime", "qonnx"}
    assert "sttn_sim[interop]" in project["optional-dependencies"]["test"]  # the tests install it
    assert python == project["requires-python"]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci
    assert "make test" in readme and "make demo" in readme


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def _readme_shell_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(("python -m", "sttn ")):
                commands.append(line)
    return commands


def test_readme_lists_every_entry_point():
    """Every `sttn` subcommand has an example line, and its `python -m` form is named."""
    from analysis.cli import COMMANDS

    commands = _readme_shell_commands()
    readme = (ROOT / "README.md").read_text()
    for command in COMMANDS:
        assert any(line.split()[:2] == ["sttn", command.name] for line in commands), command.name
    for module in ("sttn_sim.verify", "sttn_sim info", "analysis.demo", "analysis.figures", "analysis.compare",
                   "analysis.soft_vs_hard", "sttn_sim.bench"):
        assert f"python -m {module}" in readme


def test_readme_has_command_examples():
    assert len(_readme_shell_commands()) >= 10


@pytest.mark.slow
@pytest.mark.parametrize("command", _readme_shell_commands())
def test_readme_command_examples_run(command, tmp_path):
    """Every `python -m ...` / `sttn ...` line of the README, run as written, each in its
    own scratch folder that sees the repository's tests/fixtures (one test per line, so
    pytest-xdist spreads them over the cores)."""
    import shlex
    import subprocess
    import sys

    (tmp_path / "tests").symlink_to(ROOT / "tests")
    words = shlex.split(command)
    # `sttn X` is the console script of analysis.cli; run it through this interpreter
    argv = [sys.executable, "-m", "analysis.cli", *words[1:]] if words[0] == "sttn" else [sys.executable, *words[1:]]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
