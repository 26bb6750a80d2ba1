"""Atomic file output: write to a temporary file beside the target, then rename.

Nothing on disk is ever half-written: a failure leaves the old file (if any) intact
and removes the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import SttnError


def ensure_output_dir(path) -> Path:
    """Create ``path`` (and parents) if needed and check it is a writable directory."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SttnError(f"output folder {str(out)!r} cannot be created: {exc.strerror or exc}") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise SttnError(f"output folder {str(out)!r} is not a writable directory")
    return out


@contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    Use for writers that need a file name (e.g. ``fig.savefig``)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_binary(filename: str, write, *, error=None) -> None:
    """Write a binary file atomically: ``write(f)`` fills a temporary file beside
    ``filename`` (flushed and fsynced), which is then renamed onto it and the folder
    fsynced.  On any failure the temporary file is removed and an existing file is left
    untouched; an ``OSError`` is re-raised as ``error`` (an SttnError subclass, default
    :class:`~sttn_sim.errors.CheckpointError`) naming the file."""
    from .errors import CheckpointError

    error = error or CheckpointError
    target = Path(filename)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    except OSError as exc:
        raise error(f"{filename}: cannot create a temporary file ({exc.strerror or exc})") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise error(f"{filename}: cannot write file ({exc.strerror or exc})") from None
        raise
    try:  # make the rename durable (best effort, POSIX)
        dfd = os.open(target.parent if str(target.parent) else ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
