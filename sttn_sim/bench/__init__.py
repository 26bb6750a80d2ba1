"""Benchmarks: how fast is packed ternary inference on this CPU?

``python -m sttn_sim.bench`` prints, from one run on one machine (every ratio is
against a baseline measured in the same run):

1. packed ternary GEMM GMAC/s on the ResNet-18 im2col shapes and the ratio to numpy
   float32 GEMM of the same shapes (:mod:`.gemm`);
2. end-to-end time of the full-width STTN ResNet-18 at 224×224, batch 1 and 8, through
   the packed engine and, each in its own process (:mod:`.peers`), what a user would run
   instead when installed: the same folded model as a TorchScript-frozen float32
   PyTorch module (:mod:`.torch_baseline`), a plain ResNet-18 of the same shape in
   PyTorch int8 and onnxruntime float32 / int8 (:mod:`.torch_peers`), with the ratios
   (:mod:`.end_to_end`);
3. the cost of recording activation statistics while the engine runs (:mod:`.recording`);
4. with ``--contention``, the engine's throughput against a competing process
   (:mod:`.contention`);
5. the speed targets of the CPU-class work, each met or not in this run
   (:mod:`.targets`).

The CPU class and kernels are printed first; ``--target CLASS`` measures another
class's kernels on this machine (:mod:`.cli`).

Times are medians of repeated runs after warm-up, measured in alternation with their
baseline (:mod:`.timing`); the threads, the BLAS and the machine's load are printed.
For a fair numpy baseline run with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``
(a warning is printed when they are set, and when the CPUs are busy).

Modules: :mod:`.timing` (timing helpers), :mod:`.gemm`, :mod:`.workload` (the model),
:mod:`.peers` (the runtimes' worker processes), :mod:`.end_to_end`, :mod:`.recording`,
:mod:`.contention`, :mod:`.targets`, :mod:`.torch_baseline` and :mod:`.torch_peers`
(the only modules that import PyTorch / onnxruntime), :mod:`.cli`
(:func:`add_arguments`, :func:`run`, :func:`main`).
"""

from .cli import add_arguments, build_parser, main, run

__all__ = ["add_arguments", "build_parser", "main", "run"]
