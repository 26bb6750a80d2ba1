"""The kernel test grid: every kernel test that takes ``ternary_kernel`` or
``stem_kernel`` runs once per kernel this machine can run (all of them on an AVX-512
machine: code for a narrower CPU runs on a wider one), or, when ``STTN_TEST_CPU_CLASS``
is set (the per-class subprocess runs of ``test_cpu_classes.py``), once with that
class's kernel."""

import os

import pytest

from sttn_sim.kernels.fused import STEM_KERNELS
from sttn_sim.kernels.selection import available_ternary_kernels, kernel_set

#: set by test_cpu_classes.py in its subprocesses: test only this class's kernels
TEST_CLASS_ENV = "STTN_TEST_CPU_CLASS"


def _ternary_names() -> list[str]:
    if os.environ.get(TEST_CLASS_ENV):
        return [kernel_set(os.environ[TEST_CLASS_ENV]).ternary.name]
    return [k.name for k in available_ternary_kernels()]


def _stem_names() -> list[str]:
    if os.environ.get(TEST_CLASS_ENV):
        return [kernel_set(os.environ[TEST_CLASS_ENV]).stem.name]
    return [k.name for k in STEM_KERNELS.values() if k.available()]


@pytest.fixture(scope="session", params=_ternary_names())
def ternary_kernel(request):
    """A :class:`~sttn_sim.kernels.gemm.TernaryKernel` (one test per kernel)."""
    from sttn_sim.kernels.gemm import TERNARY_KERNELS

    return TERNARY_KERNELS[request.param]


@pytest.fixture(scope="session", params=_stem_names())
def stem_kernel(request):
    """A :class:`~sttn_sim.kernels.fused.StemKernel` (one test per kernel)."""
    return STEM_KERNELS[request.param]
