"""Every CPU class's kernels compiled for that class's own target, on this machine.

Code compiled for a narrower CPU runs on a wider one.  For each class narrower than
the one numba compiles for here (a wider class's code cannot run here: on an AVX2-only
machine only ``generic`` is tested this way, the host class by the rest of the suite), a subprocess compiles the kernels for that class's
stand-in target (``STAND_INS``: ``NUMBA_CPU_NAME=haswell``, ``skylake-avx512``,
``generic``, each with its own ``NUMBA_CACHE_DIR``) and runs there the kernel sweeps
(shapes, strides, padding, channel counts not multiples of 64, K beyond one int16 chunk,
the stem) and one whole-model engine check (a ResNet-18 with γ < 0 and γ = 0 BN
channels), all with ``==`` on integers, with ``STTN_TEST_CPU_CLASS`` restricting the
kernel grid to that class's kernels.  The numba cache of each class is kept in the
system's temporary directory, so only the first run compiles.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sttn_sim.kernels.cpu import STAND_INS, classify, compile_target, probe_features

ROOT = Path(__file__).resolve().parents[2]

#: the kernel tests each class runs (a subset of the grid, kept small: see the budget in
#: the module docstring of tests/kernels/conftest.py)
CLASS_TESTS = [
    "tests/kernels/test_gemm.py::test_gemm_sweep",
    "tests/kernels/test_gemm.py::test_gemm_deep_k_beyond_one_int16_chunk",
    "tests/kernels/test_gemm.py::test_kernel_compiles_to_its_instructions",
    "tests/kernels/test_conv.py::test_conv_sweep",
    "tests/kernels/test_conv.py::test_conv_other_geometries",
    "tests/kernels/test_conv.py::test_conv_lut_row_runs",
    "tests/kernels/test_conv.py::test_conv_panels_of_any_width",
    "tests/kernels/test_conv.py::test_conv_with_epilogue_is_the_reference_epilogue_bit_for_bit",
    "tests/kernels/test_fused.py::test_direct_conv_against_float64",
    "tests/kernels/test_fused.py::test_direct_conv_with_pooling_is_the_conv_then_the_pool",
    "tests/kernels/test_fused.py::test_column_phases_match_the_padded_definition",
    "tests/kernels/test_fused.py::test_maxpool_matches_reference",
    "tests/kernels/test_fused.py::test_threshold_pack_and_codes_match_reference",
    "tests/test_engine.py::test_negative_and_zero_bn_gamma_are_present_and_exact",
]


def stand_in_env(cpu_class: str) -> dict:
    name, features = STAND_INS[cpu_class]
    env = dict(os.environ, NUMBA_CPU_NAME=name, NUMBA_CPU_FEATURES=features, STTN_TEST_CPU_CLASS=cpu_class,
               NUMBA_CACHE_DIR=str(Path(tempfile.gettempdir()) / "sttn_sim-numba-cache" / cpu_class))
    env.pop("STTN_CPU_CLASS", None)
    return env


def narrower_classes() -> list[str]:
    here = compile_target()
    if not here.is_x86:
        return ["generic"] if here.cpu_class != "generic" else []
    # a stand-in runs here only if this CPU has every feature its code uses (on an AVX2
    # machine the skylake-avx512 stand-in's code would stop with SIGILL)
    runnable = [c for c in STAND_INS if probe_features(*STAND_INS[c]) <= here.features]
    return [c for c in runnable if classify(probe_features(*STAND_INS[c])) == c and c != here.cpu_class]


@pytest.mark.slow
@pytest.mark.parametrize("cpu_class", narrower_classes())
def test_class_kernels_exact_when_compiled_for_the_class(cpu_class):
    env = stand_in_env(cpu_class)
    probe = subprocess.run(
        [sys.executable, "-c", "import json; from sttn_sim.kernels import kernel_set; "
                               "print(json.dumps(kernel_set().as_dict()))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    chosen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert chosen["cpu_class"] == chosen["target_class"] == cpu_class
    assert chosen["target_cpu"] == STAND_INS[cpu_class][0]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CLASS_TESTS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
