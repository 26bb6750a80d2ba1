"""Tests of sttn_sim.io.atomic: the one atomic writer, symlinks, permission bits, failures,
and output folders."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import sttn_sim.io.atomic as atomic
from sttn_sim.errors import CheckpointError, SttnError
from sttn_sim.io.atomic import atomic_path, atomic_write_binary, atomic_write_text, ensure_output_dir, file_name


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- atomic_write_text / _binary


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


def test_atomic_write_binary_writes_and_accepts_str(tmp_path):
    path = str(tmp_path / "out.bin")
    assert atomic_write_binary(path, lambda f: f.write(b"\x00\x01\xff")) == Path(path)
    assert Path(path).read_bytes() == b"\x00\x01\xff"


@pytest.mark.parametrize("bad_text", ["\ud800", "a" * 70_000 + "\udfff"])
def test_atomic_write_text_unencodable_keeps_old_content(tmp_path, bad_text):
    """A lone surrogate cannot be encoded as UTF-8: nothing on disk changes."""
    path = tmp_path / "out.txt"
    path.write_text("old content", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, bad_text)
    assert path.read_text(encoding="utf-8") == "old content"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_write_text_unencodable_without_old_file(tmp_path):
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "out.txt", "\ud800")
    assert _names(tmp_path) == []


class _FullDisk:
    """A file object that takes half of the first write, then fails as a full disk does."""

    def __init__(self, real, seen):
        self.real, self.seen = real, seen

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        self.seen.append((Path(self.real.name).name, os.path.getsize(self.real.name)))
        raise OSError(28, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_full_disk_mid_write_keeps_old_file_and_names_it(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old content", encoding="utf-8")
    seen = []
    monkeypatch.setattr(atomic, "open", lambda name, mode: _FullDisk(open(name, mode), seen), raising=False)
    with pytest.raises(SttnError, match=re.escape(f"{path}: cannot write file (No space left on device)")):
        atomic_write_text(path, "new content that is long enough")
    monkeypatch.undo()
    assert len(seen) == 1
    tmp_name, size = seen[0]
    assert tmp_name != "out.txt" and tmp_name.startswith(".out.txt.") and size > 0  # a partial temp file existed
    assert path.read_text(encoding="utf-8") == "old content"
    assert _names(tmp_path) == ["out.txt"]


def test_error_class_is_the_callers(tmp_path, monkeypatch):
    path = tmp_path / "m.bin"
    monkeypatch.setattr(atomic, "open", lambda name, mode: _FullDisk(open(name, mode), []), raising=False)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        atomic_write_binary(path, lambda f: f.write(b"abcdef"), error=CheckpointError)
    assert _names(tmp_path) == []


def test_failing_fsync_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(SttnError, match=re.escape(f"{path}: cannot write file (Input/output error)")):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_failing_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old", encoding="utf-8")
    calls = []

    def failing_replace(src, dst):
        calls.append((Path(src).parent, Path(src).exists(), Path(dst)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(SttnError, match=re.escape(str(path))):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert calls == [(tmp_path, True, path)]  # the temp file was complete, beside the target
    assert path.read_text(encoding="utf-8") == "old"
    assert _names(tmp_path) == ["out.txt"]


def test_atomic_write_into_missing_folder_fails_cleanly(tmp_path):
    target = tmp_path / "nope" / "out.txt"
    with pytest.raises(SttnError, match=re.escape(f"{target}: cannot create a temporary file")):
        atomic_write_text(target, "x")
    assert _names(tmp_path) == []


def test_target_that_is_a_directory(tmp_path):
    folder = tmp_path / "adir"
    folder.mkdir()
    with pytest.raises(SttnError, match=re.escape(f"{folder}: cannot write file")):
        atomic_write_text(folder, "x")
    assert folder.is_dir() and _names(folder) == [] and _names(tmp_path) == ["adir"]


def test_file_name():
    assert file_name(Path("a") / "b.txt") == os.path.join("a", "b.txt")
    assert file_name("x") == "x"
    with pytest.raises(CheckpointError, match="expected a file path .* got int"):
        file_name(3, error=CheckpointError)


# --------------------------------------------------------------------------- atomic_path


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


def test_atomic_path_oserror_in_block_names_the_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"old")
    with pytest.raises(SttnError, match=re.escape(f"{path}: cannot write file (No space left on device)")):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")
    assert path.read_bytes() == b"old"
    assert _names(tmp_path) == ["table.csv"]


def test_atomic_path_keeps_suffix(tmp_path):
    """Writers that pick a format from the suffix (savefig) see the target's suffix."""
    with atomic_path(tmp_path / "fig.pdf") as tmp:
        assert tmp.name.endswith(".pdf")
        tmp.write_bytes(b"%PDF")
    assert (tmp_path / "fig.pdf").read_bytes() == b"%PDF"
    assert _names(tmp_path) == ["fig.pdf"]


# --------------------------------------------------------------------------- permission bits


def test_new_file_gets_0666_less_umask(tmp_path, umask_022):
    path = tmp_path / "new.txt"
    atomic_write_text(path, "x")
    assert _mode(path) == 0o644
    os.umask(0o077)
    other = tmp_path / "private.txt"
    with atomic_path(other) as tmp:
        tmp.write_bytes(b"y")
    assert _mode(other) == 0o600


def test_umask_is_not_changed(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert os.umask(0o022) == 0o022


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755, 0o444])
def test_existing_file_keeps_its_mode(tmp_path, umask_022, mode):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    path.chmod(mode)
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert _mode(path) == mode


def test_existing_file_keeps_its_mode_through_atomic_path(tmp_path, umask_022):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")
    path.chmod(0o600)
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert _mode(path) == 0o600 and path.read_bytes() == b"new"


# --------------------------------------------------------------------------- symbolic links: followed


def test_symlink_is_followed_and_kept(tmp_path, umask_022):
    real_dir = tmp_path / "store"
    real_dir.mkdir()
    real = real_dir / "model.bin"
    real.write_bytes(b"old")
    real.chmod(0o600)
    link = tmp_path / "current.bin"
    link.symlink_to(real)
    seen = []
    with atomic_path(link) as tmp:
        seen.append(tmp.parent)
        tmp.write_bytes(b"new")
    assert seen == [real_dir]  # the temporary file lives beside the real file
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new" and link.read_bytes() == b"new"
    assert _mode(real) == 0o600
    assert _names(real_dir) == ["model.bin"] and _names(tmp_path) == ["current.bin", "store"]


def test_relative_symlink_chain(tmp_path):
    (tmp_path / "a").mkdir()
    real = tmp_path / "a" / "real.txt"
    real.write_text("old")
    (tmp_path / "hop.txt").symlink_to(Path("a") / "real.txt")
    (tmp_path / "start.txt").symlink_to("hop.txt")
    atomic_write_text(tmp_path / "start.txt", "new")
    assert real.read_text() == "new"
    assert (tmp_path / "start.txt").is_symlink() and (tmp_path / "hop.txt").is_symlink()


def test_dangling_symlink_creates_its_target(tmp_path, umask_022):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "target.txt")
    atomic_write_text(link, "hello")
    assert link.is_symlink() and (tmp_path / "target.txt").read_text() == "hello"
    assert _mode(tmp_path / "target.txt") == 0o644


def test_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(SttnError, match=re.escape(f"{tmp_path / 'a'}: cannot write file (symbolic link loop)")):
        atomic_write_text(tmp_path / "a", "x")
    assert (tmp_path / "a").is_symlink() and (tmp_path / "b").is_symlink()
    assert _names(tmp_path) == ["a", "b"]


def test_failure_through_a_symlink_keeps_the_real_file(tmp_path, monkeypatch):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    monkeypatch.setattr(atomic, "open", lambda name, mode: _FullDisk(open(name, mode), []), raising=False)
    with pytest.raises(SttnError, match=re.escape(f"{link}: cannot write file")):
        atomic_write_text(link, "new content")
    monkeypatch.undo()
    assert real.read_text() == "old" and link.is_symlink()
    assert _names(tmp_path) == ["link.txt", "real.txt"]


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


def test_ensure_output_dir_unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): a read-only mode does not stop writes; "
                        "test_ensure_output_dir_unwritable_simulated covers the branch")
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
    target = tmp_path / "out"
    target.mkdir()
    monkeypatch.setattr(atomic.os, "access", lambda path, mode: not (Path(path) == target and mode == os.W_OK))
    with pytest.raises(SttnError) as info:
        ensure_output_dir(target)
    assert repr(str(target)) in str(info.value)
    assert "not a writable directory" in str(info.value)
