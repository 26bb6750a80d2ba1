"""Tests of sttn_sim.fileio: atomic writes and output folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sttn_sim.errors import SttnError
from sttn_sim.fileio import atomic_path, atomic_write_text, ensure_output_dir


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- atomic_write_text


@pytest.mark.parametrize("text", ["", "hello\n", "ünïcødé −1 0 +1\n", "x" * 100_000])
def test_atomic_write_text_writes(tmp_path, text):
    path = tmp_path / "out.txt"
    result = atomic_write_text(path, text)
    assert result == path
    assert path.read_bytes() == text.encode("utf-8")
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_write_text_replaces(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text(encoding="utf-8") == "new"
    assert _names(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("bad_text", ["\ud800", "a" * 70_000 + "\udfff"])
def test_atomic_write_text_failure_keeps_old_content(tmp_path, bad_text):
    """A lone surrogate cannot be encoded as UTF-8: the write fails after the temp file exists."""
    path = tmp_path / "out.txt"
    path.write_text("old content", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, bad_text)
    assert path.read_text(encoding="utf-8") == "old content"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_write_text_failure_without_old_file(tmp_path):
    path = tmp_path / "out.txt"
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "\ud800")
    assert _names(tmp_path) == []


def test_atomic_write_text_failure_mid_write(tmp_path, monkeypatch):
    """Fail after part of the new content reached the temp file."""
    path = tmp_path / "out.txt"
    path.write_text("old content", encoding="utf-8")
    seen = []

    def partial_write(self, data, encoding=None, errors=None, newline=None):
        with open(self, "w", encoding=encoding) as f:
            f.write(data[: len(data) // 2])
        seen.append((self.name, self.stat().st_size))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", partial_write)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new content that is long enough")
    monkeypatch.undo()
    assert len(seen) == 1
    tmp_name, size = seen[0]
    assert tmp_name != "out.txt" and size > 0  # the partial file was a temporary beside the target
    assert path.read_text(encoding="utf-8") == "old content"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_path_exception_in_block(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path
            assert tmp != path
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["fig.png"]


def test_atomic_path_keeps_suffix(tmp_path):
    """Writers that pick a format from the suffix (savefig) see the target's suffix."""
    with atomic_path(tmp_path / "fig.pdf") as tmp:
        assert tmp.name.endswith(".pdf")
        tmp.write_bytes(b"%PDF")
    assert (tmp_path / "fig.pdf").read_bytes() == b"%PDF"
    assert _names(tmp_path) == ["fig.pdf"]


def test_atomic_write_into_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "nope" / "out.txt", "x")
    assert _names(tmp_path) == []


# --------------------------------------------------------------------------- ensure_output_dir


def test_ensure_output_dir_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    result = ensure_output_dir(target)
    assert result == target
    assert target.is_dir()
    assert ensure_output_dir(str(target)) == target  # idempotent, accepts str


def test_ensure_output_dir_on_a_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("I am a file")
    with pytest.raises(SttnError) as info:
        ensure_output_dir(f)
    assert repr(str(f)) in str(info.value)
    assert f.read_text() == "I am a file"


def test_ensure_output_dir_below_a_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("I am a file")
    target = f / "sub"
    with pytest.raises(SttnError) as info:
        ensure_output_dir(target)
    assert repr(str(target)) in str(info.value)


def _root_can_write(directory: Path) -> bool:
    return os.access(directory, os.W_OK)


def test_ensure_output_dir_unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if _root_can_write(locked):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): a read-only mode does not stop writes")
        with pytest.raises(SttnError) as info:
            ensure_output_dir(locked)
        assert repr(str(locked)) in str(info.value)
        assert "not a writable directory" in str(info.value)
        sub = locked / "new"
        with pytest.raises(SttnError) as info:
            ensure_output_dir(sub)
        assert repr(str(sub)) in str(info.value)
    finally:
        locked.chmod(stat.S_IRWXU)


def test_ensure_output_dir_unwritable_simulated(tmp_path, monkeypatch):
    """The same branch as above, reachable as root: the permission check reports no write access."""
    import sttn_sim.fileio as fileio

    target = tmp_path / "out"
    target.mkdir()
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: not (Path(path) == target and mode == os.W_OK))
    with pytest.raises(SttnError) as info:
        ensure_output_dir(target)
    assert repr(str(target)) in str(info.value)
    assert "not a writable directory" in str(info.value)
