"""The packed ternary inference engine: runs a folded model layer by layer.

``Engine(folded_model).run(x, recorder=None)`` takes an NCHW float32 batch and
returns float32 logits.  It first rewrites the graph with the named fusions of
:mod:`sttn_sim.fusions` (BN into the preceding convolution or ternary layer, the
residual addition and the PReLU into the ternary layer's epilogue), then builds one
step per layer of the rewritten graph from the layer's kind
(:meth:`sttn_sim.kinds.LayerKind.engine_step`): ternary layers use the packed bit-plane
arithmetic of :mod:`sttn_sim.kernels` (docs/design.md §2.5) — the threshold layer
writes channel-packed NHWC bit planes in one pass, the packed convolution produces
exact int32 accumulators, and one fused epilogue applies scale, bias, BN, residual
(zero-extended for the channel-pad shortcut) and PReLU.  Float layers (stem
convolution, pooling, head) run in numpy / Numba float32.

Arithmetic: accumulators are exact integers; float math is float32, as a deployment
does; float thresholds are rounded up to float32 so that the engine's comparison is
exactly the float64 rule applied to its float32 value.  The engine therefore differs
from the float64 reference only by float32 rounding of the residual stream, and an
activation code can differ only where the pre-activation is within float32 rounding
of a threshold (``python -m sttn_sim.verify`` reports such near-ties).

A recorder (:class:`sttn_sim.recording.Recorder`) receives a
:class:`~sttn_sim.recording.LayerEvent` for every executed step: ternary layers with
their int32 accumulators, threshold layers with their input and int8 codes, and other
layers with their output.  A recorder that offers a statistics accumulator
(:meth:`~sttn_sim.recording.Recorder.threshold_accumulator`, as
:class:`sttn_sim.stats.ActivationRecorder` does) gets it filled by the threshold kernel
itself, without the codes being written out.  A fused step is reported once, with the
first layer of its chain (the step's output is stored under the last one's name); the
chains are listed in :attr:`Engine.fused`.

``use_reference=True`` runs the same model through the float64/int64 reference
(:func:`sttn_sim.reference.run_reference`) instead, for debugging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numba
import numpy as np

from .errors import ModelError
from .kernels.selection import KernelSet, kernel_set  # importing sttn_sim.kernels sets numba's environment
from .kernels.threads import ThreadChooser, thread_count, usable_cpus
from .fusions import fuse_for_engine
from .graph import Layer, Model
from .reference import check_input, run_reference
from .shapes import infer_shapes
from .validation import validate_model
from .walk import walk

#: ``run(args, recorder=None) -> (output, LayerEvent)``: what one engine step executes
StepRun = Callable


@dataclass
class Step:
    """One executed operation: a layer of the rewritten graph (possibly a fused chain)."""

    name: str  # the name its output is stored under (the last layer of the chain)
    layer: Layer  # the first layer of the chain, as in the folded model
    inputs: list[str]
    run: StepRun
    fused: list[str] = field(default_factory=list)  # the layers absorbed after the first


class EngineContext:
    """What a kind's :meth:`~sttn_sim.kinds.LayerKind.engine_step` may ask about the
    rewritten graph it runs in."""

    def __init__(self, graph: Model, original: Model, kernels: KernelSet | None = None):
        self.graph = graph
        self.shapes = infer_shapes(graph)
        self.kernels = kernels or kernel_set()  # the kernels chosen for this CPU (sttn_sim.kernels.selection)
        self._original = {layer.name: layer for layer in original.layers}

    def consumers(self, name: str) -> list[Layer]:
        return self.graph.consumers(name)

    def first_layer(self, layer: Layer) -> Layer:
        """The folded model's layer that starts ``layer``'s fused chain."""
        return self._original[layer.attrs.get("fused_from", [layer.name])[0]]


class Engine:
    """Packed ternary execution of a folded model (see the module docstring).

    ``cpu_class``: run the kernels of that CPU class (:data:`sttn_sim.kernels.CPU_CLASSES`)
    instead of the compile target's (or ``$STTN_CPU_CLASS``'s); see :attr:`kernels`.
    ``threads``: the parallel regions' thread count; ``"auto"`` (default) uses the CPUs
    this process may run on (affinity and cgroup quota,
    :func:`sttn_sim.kernels.threads.usable_cpus`) and drops to one thread while another
    process competes for the cores (:class:`~sttn_sim.kernels.threads.ThreadChooser`);
    an integer fixes it.  A batch runs whole, each kernel splitting the batch's work over
    the threads, so the per-step Python and dispatch cost is paid once per batch."""

    def __init__(self, model: Model, *, use_reference: bool = False, cpu_class: str | None = None,
                 threads: int | str = "auto"):
        if not isinstance(model, Model):
            raise ModelError(f"Engine() expects a sttn_sim Model, got {type(model).__name__}")
        if model.form != "folded":
            raise ModelError(
                f"Engine needs a folded model, got form {model.form!r} for {model.arch!r}; "
                f"call sttn_sim.fold(model) first")
        self.model = model
        self.use_reference = use_reference
        self.shapes = validate_model(model)
        self.graph = fuse_for_engine(model)  # the rewritten graph the steps run
        self.kernel_set = kernel_set(cpu_class)
        self.threads = threads if threads == "auto" else thread_count(threads)
        self._chooser = ThreadChooser(thread_count(usable_cpus())) if threads == "auto" else None
        ctx = EngineContext(self.graph, model, self.kernel_set)
        self.steps = [Step(layer.name, ctx.first_layer(layer), list(layer.inputs),
                           layer.spec.engine_step(layer, ctx), list(layer.attrs.get("fused_from", [layer.name])[1:]))
                      for layer in self.graph.layers]

    @property
    def kernels(self) -> dict:
        """The CPU class, compile target, kernels and threads this engine runs (what
        ``bench`` and ``verify --json`` print)."""
        threads = f"auto (1 to {self._chooser.most})" if self._chooser is not None else self.threads
        return {**self.kernel_set.as_dict(), "threads": threads}

    @property
    def fused(self) -> dict[str, list[str]]:
        """Layers fused into each step, keyed by the step's first layer."""
        return {s.layer.name: list(s.fused) for s in self.steps if s.fused}

    def run(self, x: np.ndarray, recorder=None) -> np.ndarray:
        """Float32 logits for the NCHW batch ``x`` (float64 logits with ``use_reference``)."""
        if self.use_reference:
            return run_reference(self.model, x, record=False, recorder=recorder).logits
        x = check_input(self.model, x)
        if recorder is not None:
            recorder.on_batch_start(self.model, len(x))

        def execute(step: Step, args: list):
            out, event = step.run(args, recorder)
            if recorder is not None:
                recorder.on_layer(event)
            return out

        x = np.ascontiguousarray(x, dtype=np.float32)
        threads = self._chooser.choose(x.shape) if self._chooser is not None else self.threads
        start = time.perf_counter()
        before = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            logits = self._walk(x, execute)
        finally:
            numba.set_num_threads(before)
        if self._chooser is not None:
            self._chooser.record(x.shape, threads, time.perf_counter() - start)
        return logits

    def _walk(self, x: np.ndarray, execute) -> np.ndarray:
        output = self.steps[-1].name
        return np.asarray(walk(self.steps, {"input": x}, execute, output=output)[output], np.float32)

    __call__ = run

    def describe(self) -> list[dict]:
        """One dict per executed step: the layer, its kind and the layers fused into it."""
        return [{"step": s.name, "layer": s.layer.name, "kind": s.layer.kind, "fused": list(s.fused)}
                for s in self.steps]
