"""The project's one way of writing files: atomically, beside the target.

Every writer of sttn_sim (checkpoints, reports, tables, figures) goes through
:func:`atomic_path`: the new content is written to a temporary file *in the folder of
the file it replaces*, flushed and fsynced, given its final permission bits, then
renamed onto the target with :func:`os.replace` (atomic on POSIX: a reader sees the old
file or the new one, never a mixture) and the folder is fsynced so that the rename
survives a crash.  If anything fails (full disk, killed process, an exception in the
writer) the temporary file is removed and an existing target is left byte for byte as
it was; an :class:`OSError` becomes the project's error (an
:class:`~sttn_sim.errors.SttnError` subclass chosen by the caller) naming the file.

Rules a careful tool follows, and this module's choices:

* **Symbolic links are followed.**  If the target is a symlink, the file it points to
  (resolved with :func:`os.path.realpath`, through any chain of links) is replaced,
  atomically, with its temporary file in *that* file's folder; the link itself is kept
  and keeps pointing at the new content, as ``open(path, "w")`` would do but without
  the half-written window.  A dangling link creates the file it names.  A link loop is
  refused with the project's error naming the path.
* **Permission bits.**  Re-writing an existing file keeps its mode (a 0600 file stays
  0600).  A new file gets ``0o666 & ~umask``, the mode ``open(path, "w")`` gives it:
  the temporary file is created by :func:`os.open` with mode 0o666, so the kernel
  applies the umask (the process umask is never changed, not even briefly).
* Hard links to the old file are not updated (the new content is a new inode; no
  atomic writer can keep them), and the owner of the new file is the writing user.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import SttnError

__all__ = [
    "atomic_path",
    "atomic_write_binary",
    "atomic_write_text",
    "ensure_output_dir",
    "file_name",
]

_NEW_FILE_MODE = 0o666  # before the umask, as for open(path, "w")
_TEMP_ATTEMPTS = 100


def file_name(path, *, error: type[SttnError] = SttnError) -> str:
    """``path`` (str or os.PathLike) as a str, for opening and for messages."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError:
        raise error(f"expected a file path (str or os.PathLike), got {type(path).__name__}") from None


def ensure_output_dir(path) -> Path:
    """Create the folder ``path`` (and parents) if needed and check it is a writable directory."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SttnError(f"output folder {str(out)!r} cannot be created: {exc.strerror or exc}") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise SttnError(f"output folder {str(out)!r} is not a writable directory")
    return out


def _resolved_target(name: str, error: type[SttnError]) -> Path:
    """The file that writing ``name`` replaces: ``name`` with every symlink followed."""
    target = Path(os.path.realpath(name))
    if target.is_symlink():  # realpath stops inside a loop and returns a link
        raise error(f"{name}: cannot write file (symbolic link loop)")
    return target


def _final_mode(target: Path) -> int | None:
    """The permission bits of the existing ``target``, or None for a new file."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def _create_temp(target: Path) -> Path:
    """Create an empty temporary file beside ``target`` (mode 0o666 & ~umask)."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp{target.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), _NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary file name beside {target.name} after {_TEMP_ATTEMPTS} attempts")


def _fsync_path(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every OS or file system allows it)."""
    try:
        _fsync_path(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        pass


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def atomic_path(path, *, error: type[SttnError] = SttnError) -> Iterator[Path]:
    """Yield a temporary file name beside the target; on success it replaces ``path``.

    For writers that need a file name (``fig.savefig(tmp)``, ``df.to_csv(tmp)``,
    ``np.savez(tmp)``): the temporary name ends with the target's suffix, so writers that
    choose a format by suffix see the right one.  See the module docstring for symlinks,
    permission bits and failures; an ``OSError`` (in the block or while replacing) is
    raised as ``error`` naming ``path``, any other exception propagates unchanged.
    """
    name = file_name(path, error=error)
    target = _resolved_target(name, error)
    try:
        tmp = _create_temp(target)
    except OSError as exc:
        raise error(f"{name}: cannot create a temporary file beside it ({exc.strerror or exc})") from None
    try:
        yield tmp
        _fsync_path(tmp)
        mode = _final_mode(target)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError):
            raise error(f"{name}: cannot write file ({exc.strerror or exc})") from None
        raise
    _fsync_dir(target.parent)


def atomic_write_binary(path, write: Callable[[IO[bytes]], object], *,
                        error: type[SttnError] = SttnError) -> Path:
    """Write a binary file atomically: ``write(f)`` fills the temporary file ``f``
    (opened ``"wb"``), which then replaces ``path`` as :func:`atomic_path` does."""
    with atomic_path(path, error=error) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


def atomic_write_text(path, text: str, *, error: type[SttnError] = SttnError) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.  A string that cannot be encoded
    (a lone surrogate) raises ``UnicodeEncodeError`` before anything touches the disk."""
    data = text.encode("utf-8")
    return atomic_write_binary(path, lambda f: f.write(data), error=error)
