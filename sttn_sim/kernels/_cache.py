"""Numba's on-disk cache, invalidated when any kernel source changes.

Numba keys a cached function on the content of its own source file only.  The kernels
here are built from intrinsics and micro-kernels of other modules (``_llvm.py``,
``gemm.py``, ``fused.py``): after an edit to ``_llvm.py`` alone, ``conv.py``'s cached
machine code would still be loaded, compiled from the old intrinsics.  The locators
below add to the source stamp of every function defined in this package a digest of
all the package's ``.py`` files, so any edit recompiles every kernel once.

They are put first in numba's locator list by :func:`install` (called by the package's
``__init__``); for functions of other files they behave as numba's own.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from numba.core import caching

KERNELS_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def sources_digest(directory: Path = KERNELS_DIR) -> str:
    """sha256 over the names and contents of the ``.py`` files of ``directory``."""
    h = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class _KernelSourcesStamp:
    def get_source_stamp(self):
        own = super().get_source_stamp()
        if Path(self._py_file).resolve().parent == KERNELS_DIR:
            return own, sources_digest()
        return own


class KernelUserProvidedCacheLocator(_KernelSourcesStamp, caching.UserProvidedCacheLocator):
    """``$NUMBA_CACHE_DIR`` locator whose stamp covers all kernel sources."""


class KernelInTreeCacheLocator(_KernelSourcesStamp, caching.InTreeCacheLocator):
    """``__pycache__`` locator whose stamp covers all kernel sources."""


def install() -> None:
    """Put the two locators first in numba's list (once)."""
    classes = caching.CacheImpl._locator_classes
    for cls in (KernelInTreeCacheLocator, KernelUserProvidedCacheLocator):
        if cls not in classes:
            classes.insert(0, cls)
