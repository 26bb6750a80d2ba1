"""Numba's cache stamp of the kernels covers every kernel source (sttn_sim.kernels._cache)."""

import shutil

from numba.core import caching

from sttn_sim.kernels import _cache, conv
from sttn_sim.ops import _im2col


def test_digest_changes_with_any_kernel_source(tmp_path):
    for path in _cache.KERNELS_DIR.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
    before = _cache.sources_digest.__wrapped__(tmp_path)
    assert before == _cache.sources_digest()  # same files, same digest
    llvm = tmp_path / "_llvm.py"
    llvm.write_bytes(llvm.read_bytes() + b"\n# an edit to the intrinsics only\n")
    assert _cache.sources_digest.__wrapped__(tmp_path) != before


def test_a_kernel_stamp_holds_its_own_stamp_and_the_digest():
    locator = conv._conv_kernel._cache._impl.locator
    assert isinstance(locator, (_cache.KernelInTreeCacheLocator, _cache.KernelUserProvidedCacheLocator))
    own, digest = locator.get_source_stamp()
    assert digest == _cache.sources_digest()
    assert own == caching.InTreeCacheLocator(conv._conv_kernel.py_func, conv.__file__).get_source_stamp()


def test_functions_outside_the_kernels_keep_numba_stamp():
    func = next(v for v in vars(_im2col).values() if hasattr(v, "_cache") and hasattr(v, "py_func"))
    stamp = _cache.KernelInTreeCacheLocator(func.py_func, _im2col.__file__).get_source_stamp()
    assert stamp == caching.InTreeCacheLocator(func.py_func, _im2col.__file__).get_source_stamp()


def test_install_puts_the_locators_first_once():
    _cache.install()
    classes = caching.CacheImpl._locator_classes
    assert classes[:2] == [_cache.KernelUserProvidedCacheLocator, _cache.KernelInTreeCacheLocator]
    assert classes.count(_cache.KernelInTreeCacheLocator) == 1
