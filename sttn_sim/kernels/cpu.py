"""The CPU the kernels are compiled for, and its class.

Numba compiles for one LLVM target per process: ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES`` when set, else the host (llvmlite's host CPU name and features).
:func:`compile_target` reads that target the way numba does; :func:`classify` puts it
in one of :data:`CPU_CLASSES`, for which :mod:`.selection` picks kernels and tiles:

* ``avx512_vpopcntdq`` -- AVX-512 (F, BW) with a vector popcount (``vpopcntq``);
* ``avx512`` -- AVX-512 (F, BW) without it;
* ``avx2`` -- AVX2 and FMA (16 vector registers of 256 bits);
* ``generic`` -- anything else (portable code, e.g. ``NUMBA_CPU_NAME=generic`` or
  aarch64): only correct.

A target given by name with an empty feature string (``NUMBA_CPU_NAME=haswell
NUMBA_CPU_FEATURES=""``: LLVM then uses that CPU's own features) is probed: a few
vector operations are compiled for it with llvmlite and the instructions LLVM emits
say which features it has (:func:`probe_features`).

Code compiled for a narrower target runs on a wider CPU, so every class can be tested
on an AVX-512 machine (``STAND_INS`` gives the target of each class's stand-in).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import llvmlite.binding as llvm
from numba.core import config
from numba.core.codegen import get_host_cpu_features

from ..errors import SttnError

#: the CPU classes, widest first, and what each means
CPU_CLASSES = {
    "avx512_vpopcntdq": "AVX-512 with VPOPCNTDQ (vector popcount)",
    "avx512": "AVX-512 (F, BW) without VPOPCNTDQ",
    "avx2": "AVX2 + FMA, 16 vector registers",
    "generic": "portable code (no x86 vector extension assumed): only correct",
}

#: the environment variable that asks for another CPU class than the compile target's
CPU_CLASS_ENV = "STTN_CPU_CLASS"


class KernelSelectionError(SttnError, ValueError):
    """A CPU class or kernel that does not exist or cannot run on this target."""


#: the LLVM target (``NUMBA_CPU_NAME``, ``NUMBA_CPU_FEATURES``) that stands in for each
#: class on a wider x86 machine (the empty feature string means "that CPU's features")
STAND_INS = {
    "avx512": ("skylake-avx512", ""),
    "avx2": ("haswell", ""),
    "generic": ("generic", ""),
}

#: the features each class needs
CLASS_FEATURES = {
    "avx512_vpopcntdq": frozenset({"avx512f", "avx512bw", "avx512vpopcntdq"}),
    "avx512": frozenset({"avx512f", "avx512bw"}),
    "avx2": frozenset({"avx2", "fma"}),
    "generic": frozenset(),
}


@dataclass(frozen=True)
class CompileTarget:
    """What numba compiles for: the LLVM CPU name, the enabled features (names without
    the ``+``), the triple, and where the choice came from."""

    cpu_name: str
    features: frozenset
    triple: str
    source: str

    @property
    def is_x86(self) -> bool:
        return self.triple.split("-")[0] in ("x86_64", "i386", "i686")

    @property
    def cpu_class(self) -> str:
        """The widest class whose features the target has (:func:`classify`)."""
        return classify(self.features, self.is_x86)

    def has(self, *features: str) -> bool:
        return all(f in self.features for f in features)

    def as_dict(self) -> dict:
        return {"cpu_name": self.cpu_name, "cpu_class": self.cpu_class, "source": self.source,
                "triple": self.triple}


def classify(features, is_x86: bool = True) -> str:
    """The widest of :data:`CPU_CLASSES` whose :data:`CLASS_FEATURES` are all in
    ``features`` (``generic`` off x86)."""
    if not is_x86:
        return "generic"
    for name, needed in CLASS_FEATURES.items():
        if needed <= set(features):
            return name
    return "generic"  # pragma: no cover  (generic needs nothing)


def parse_features(text: str) -> frozenset:
    """The enabled features of an LLVM feature string ``"+avx2,-avx512f,..."``."""
    return frozenset(f[1:] for f in text.split(",") if f.startswith("+"))


def _probe_ir() -> str:
    # one function per feature whose instruction only LLVM's own choice reveals
    return """
declare <8 x i64> @llvm.ctpop.v8i64(<8 x i64>)
declare <8 x float> @llvm.fma.v8f32(<8 x float>, <8 x float>, <8 x float>)
define void @probe_vpopcntdq(ptr %p) {
  %v = load <8 x i64>, ptr %p
  %c = call <8 x i64> @llvm.ctpop.v8i64(<8 x i64> %v)
  store <8 x i64> %c, ptr %p
  ret void
}
define void @probe_avx512bw(ptr %p, ptr %q) {
  %a = load <64 x i8>, ptr %p
  %b = load <64 x i8>, ptr %q
  %c = add <64 x i8> %a, %b
  store <64 x i8> %c, ptr %p
  ret void
}
define void @probe_avx2(ptr %p, ptr %q) {
  %a = load <32 x i8>, ptr %p
  %b = load <32 x i8>, ptr %q
  %c = add <32 x i8> %a, %b
  store <32 x i8> %c, ptr %p
  ret void
}
define void @probe_fma(ptr %p, ptr %q) {
  %a = load <8 x float>, ptr %p
  %b = load <8 x float>, ptr %q
  %c = call <8 x float> @llvm.fma.v8f32(<8 x float> %a, <8 x float> %b, <8 x float> %a)
  store <8 x float> %c, ptr %p
  ret void
}
"""


def _function_asm(asm: str, name: str) -> str:
    start = asm.index(f"{name}:")
    end = asm.find(".Lfunc_end", start)
    return asm[start:end if end >= 0 else None]


@lru_cache(maxsize=None)
def probe_features(cpu_name: str, features: str = "", triple: str | None = None) -> frozenset:
    """The features among avx512f, avx512bw, avx512vpopcntdq, avx2, fma that LLVM uses
    when compiling for ``cpu_name`` with ``features``, read from the instructions it
    emits for a few vector operations."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    triple = triple or llvm.get_process_triple()
    module = llvm.parse_assembly(_probe_ir())
    module.triple = triple
    machine = llvm.Target.from_triple(triple).create_target_machine(cpu=cpu_name, features=features, opt=2)
    asm = machine.emit_assembly(module)
    found = set()
    if "vpopcntq" in (f := _function_asm(asm, "probe_vpopcntdq")) and "zmm" in f:
        found |= {"avx512f", "avx512vpopcntdq"}
    if "vpaddb" in (f := _function_asm(asm, "probe_avx512bw")) and "zmm" in f:
        found |= {"avx512f", "avx512bw"}
    if "vpaddb" in (f := _function_asm(asm, "probe_avx2")) and "ymm" in f:
        found.add("avx2")
    if "vfmadd" in _function_asm(asm, "probe_fma"):
        found.add("fma")
    return frozenset(found)


def compile_target() -> CompileTarget:
    """The target numba compiles this process's kernels for (see the module docstring)."""
    config.reload_config()  # numba re-reads NUMBA_CPU_NAME/FEATURES when it compiles
    return _compile_target(config.CPU_NAME, config.CPU_FEATURES)


@lru_cache(maxsize=None)
def _compile_target(cpu_name: str | None, cpu_features: str | None) -> CompileTarget:
    name = cpu_name or llvm.get_host_cpu_name()
    triple = llvm.get_process_triple()
    if cpu_features is None:  # numba uses the host's features (even with NUMBA_CPU_NAME set)
        text = get_host_cpu_features()
        features = parse_features(text)
        source = "host" if cpu_name is None else f"NUMBA_CPU_NAME={cpu_name} with the host's features"
    else:
        text = cpu_features
        source = f"NUMBA_CPU_NAME={cpu_name or '(host)'}, NUMBA_CPU_FEATURES={cpu_features!r}"
        features = parse_features(text) if text.strip() else probe_features(name, "", triple)
    return CompileTarget(name, features, triple, source)


def requested_class(cpu_class: str | None = None, target: CompileTarget | None = None) -> tuple[str, str]:
    """``(class, where it came from)``: ``cpu_class`` if given, else ``$STTN_CPU_CLASS``,
    else the compile target's class."""
    where = "cpu_class"
    if cpu_class is None and os.environ.get(CPU_CLASS_ENV):
        cpu_class, where = os.environ[CPU_CLASS_ENV], CPU_CLASS_ENV
    cpu_class = cpu_class or (target or compile_target()).cpu_class
    if cpu_class not in CPU_CLASSES:
        raise KernelSelectionError(f"{where}: expected one of {', '.join(CPU_CLASSES)}, got {cpu_class!r}")
    return cpu_class, where


def check_available(kernel, cpu_class: str, where: str, target: CompileTarget) -> None:
    """Refuse ``kernel`` (anything with ``name`` and ``available(target)``) of
    ``cpu_class`` when ``target`` lacks its instructions."""
    if not kernel.available(target):
        raise KernelSelectionError(
            f"{where}: kernel {kernel.name} of class {cpu_class} needs instructions that the compile target "
            f"{target.cpu_name} ({target.source}) lacks; its class is {target.cpu_class}")


__all__ = ["CPU_CLASSES", "CPU_CLASS_ENV", "STAND_INS", "CLASS_FEATURES", "KernelSelectionError", "CompileTarget",
           "classify", "parse_features", "probe_features", "compile_target", "requested_class", "check_available"]
