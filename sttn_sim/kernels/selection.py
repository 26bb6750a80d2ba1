"""Which kernels run on this CPU: one :class:`KernelSet` per CPU class.

==================  =========================  ===================  =================
class               ternary GEMM / conv        stem (float conv)    chosen because
==================  =========================  ===================  =================
avx512_vpopcntdq    popcount-zmm-5x16          fma-zmm-48px-8ch     ~140 MAC/cycle/core
avx512              int8-vnni-zmm-6x64 (VNNI)  fma-zmm-48px-8ch     ~100 MAC/cycle/core
                    or lut-pshufb-zmm-12x64                         (VNNI), ~70 (lut)
avx2                int8-vnni-ymm-5x16 (AVX-   fma-ymm-24px-4ch     ~50 MAC/cycle/core
                    VNNI) or lut-pshufb-ymm                         (either)
generic             popcount-generic-4x4       fma-xmm-12px-3ch     portable
==================  =========================  ===================  =================

(one thread, Sapphire Rapids-class Xeon at ~2.0 GHz, 1152-deep GEMM tiles: popcount
zmm 295 GMAC/s, vpdpbusd zmm 191-205, vpdpbusd ymm 102-115; compiled for
skylake-avx512: lut zmm 144 against vpmaddubsw zmm 117; compiled for haswell: lut ymm
123 against vpmaddubsw ymm 94 -- numbers of the micro-kernels in a loop, not of whole
layers.  Natively on AMD Zen 4, whole GEMMs on two threads: popcount zmm 746-904
GMAC/s, every lut and vpdpbusd kernel 254-380.  The lut kernels replaced vpmaddubsw on
the classes without VNNI: the whole ResNet-18 engine ran 0.81-0.88x the time of the
vpmaddubsw build on both stand-ins.
The vpmaddubsw kernels stay in :data:`~.gemm.TERNARY_KERNELS`, tested, selectable by
name.)

The class is that of the compile target (:func:`.cpu.compile_target`), or the one asked
for: ``kernel_set("avx2")`` or the environment variable ``STTN_CPU_CLASS``.  A class's
kernels run on any target that has their instructions (LLVM legalises the portable
vector IR of the popcount kernels anywhere), so on a wide CPU every class can be run
and tested; asking for kernels whose instructions the target lacks is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cpu import (
    CPU_CLASS_ENV,
    CPU_CLASSES,
    CompileTarget,
    KernelSelectionError,
    check_available,
    compile_target,
    requested_class,
)
from .fused import STEM_KERNELS, StemKernel, class_stem_kernel
from .gemm import TERNARY_KERNELS, TernaryKernel, class_ternary_kernel


@dataclass(frozen=True)
class KernelSet:
    """The kernels of one CPU class on one compile target."""

    cpu_class: str
    ternary: TernaryKernel
    stem: StemKernel
    target: CompileTarget

    def as_dict(self) -> dict:
        """What ``bench`` and ``verify --json`` print."""
        return {"cpu_class": self.cpu_class, "target_cpu": self.target.cpu_name,
                "target_class": self.target.cpu_class, "target_source": self.target.source,
                "ternary": self.ternary.name, "ternary_arithmetic": self.ternary.description,
                "stem": self.stem.name}

    def describe(self) -> str:
        return (f"CPU class {self.cpu_class} (compile target {self.target.cpu_name}, class "
                f"{self.target.cpu_class}); ternary kernel {self.ternary.name} ({self.ternary.description}); "
                f"stem kernel {self.stem.name}")


def class_kernels(cpu_class: str, target: CompileTarget) -> tuple[str, str]:
    """(ternary kernel, stem kernel) names of ``cpu_class`` on ``target``."""
    return class_ternary_kernel(cpu_class, target), class_stem_kernel(cpu_class, target)


def kernel_set(cpu_class: str | None = None, *, ternary: str | None = None) -> KernelSet:
    """The kernels for ``cpu_class`` (default: ``$STTN_CPU_CLASS``, else the compile
    target's class); ``ternary`` picks a ternary kernel by name instead (tests)."""
    target = compile_target()
    cpu_class, where = requested_class(cpu_class, target)
    ternary_name, stem_name = class_kernels(cpu_class, target)
    if ternary is not None:
        if ternary not in TERNARY_KERNELS:
            raise KernelSelectionError(f"ternary: expected one of {', '.join(TERNARY_KERNELS)}, got {ternary!r}")
        ternary_name = ternary
    chosen = KernelSet(cpu_class, TERNARY_KERNELS[ternary_name], STEM_KERNELS[stem_name], target)
    for kernel in (chosen.ternary, chosen.stem):
        check_available(kernel, cpu_class, where, target)
    return chosen


def available_ternary_kernels(target: CompileTarget | None = None) -> list[TernaryKernel]:
    """The ternary kernels ``target`` (default: this process's) can run."""
    target = target or compile_target()
    return [k for k in TERNARY_KERNELS.values() if k.available(target)]


def runnable_classes(target: CompileTarget | None = None) -> list[str]:
    """The CPU classes whose kernels ``target`` can run (its own and the narrower ones)."""
    target = target or compile_target()
    out = []
    for name in CPU_CLASSES:
        ternary, stem = class_kernels(name, target)
        if TERNARY_KERNELS[ternary].available(target) and STEM_KERNELS[stem].available(target):
            out.append(name)
    return out


__all__ = ["CPU_CLASS_ENV", "KernelSelectionError", "KernelSet", "class_kernels", "kernel_set",
           "available_ternary_kernels", "runnable_classes"]
