"""Benchmarks: how fast is packed ternary inference on this CPU?

``python -m sttn_sim.bench`` prints, from one run on one machine (every ratio is
against a baseline measured in the same run):

1. packed ternary GEMM GMAC/s on the ResNet-18 im2col shapes and the ratio to numpy
   float32 GEMM of the same shapes (:mod:`.gemm`);
2. end-to-end time of the full-width STTN ResNet-18 at 224×224, batch 1 and 8, through
   the packed engine and, when PyTorch is installed, through the same folded model as a
   TorchScript-frozen float32 PyTorch module (:mod:`.torch_baseline`), with the ratio
   (:mod:`.end_to_end`); without PyTorch that column is left out;
3. the cost of recording activation statistics while the engine runs (:mod:`.recording`).

Times are medians of repeated runs after warm-up, measured in alternation with their
baseline (:mod:`.timing`); the threads, the BLAS and the machine's load are printed.
For a fair numpy baseline run with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``
(a warning is printed when they are set, and when the CPUs are busy).

Modules: :mod:`.timing` (timing helpers), :mod:`.gemm`, :mod:`.workload` (the model),
:mod:`.end_to_end`, :mod:`.recording`, :mod:`.torch_baseline` (the only module that
imports PyTorch), :mod:`.cli` (:func:`add_arguments`, :func:`run`, :func:`main`).
"""

from .cli import add_arguments, build_parser, main, run

__all__ = ["add_arguments", "build_parser", "main", "run"]
