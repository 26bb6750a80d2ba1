"""The runtimes the engine is compared with, each in its own worker process.

Two OpenMP pools in one process spin against each other on a small machine, so every
runtime -- the engine included -- runs in a process of its own (:class:`PeerProcess`, which runs
:func:`worker_main` in a fresh interpreter), which builds its model once per batch
size and answers timing requests on stdin/stdout, one JSON line each.  The parent
alternates the requests between processes (interleaved rounds, see
:mod:`.end_to_end`), so a drift of the machine's load hits all of them alike.

Runtimes (:data:`PEERS`): the engine on the folded STTN ResNet-18; the same folded
model as a frozen PyTorch float32 module (:mod:`.torch_baseline`); a plain ResNet-18 of
the same shape in PyTorch int8 and onnxruntime float32 / int8 (:mod:`.torch_peers`),
when PyTorch / onnxruntime are installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

#: runtime name -> what it is
PEERS = {
    "engine": "sttn_sim Engine (STTN, ternary)",
    "pytorch_fp32": "PyTorch fp32, same STTN model, traced + frozen",
    "pytorch_int8": "PyTorch int8 (FX static quantization), plain ResNet-18 of the same shape",
    "onnxruntime_fp32": "onnxruntime fp32, plain ResNet-18 of the same shape",
    "onnxruntime_int8": "onnxruntime int8 (QDQ), plain ResNet-18 of the same shape",
}


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def available_peers() -> list[str]:
    """The runtimes of :data:`PEERS` whose packages are installed."""
    needs = {"engine": (), "pytorch_fp32": ("torch",), "pytorch_int8": ("torch",),
             "onnxruntime_fp32": ("torch", "onnx", "onnxruntime"), "onnxruntime_int8": ("torch", "onnx", "onnxruntime")}
    return [name for name in PEERS if _installed(*needs[name])]


# --------------------------------------------------------------------------------------
# the worker side


def _runner(name: str, spec: dict, x: np.ndarray):
    """A function from a batch like ``x`` to logits, for runtime ``name``."""
    from .workload import resnet18_workload  # noqa: PLC0415  (the worker's own imports)

    threads = spec.get("threads", "auto")
    model_args = {k: spec[k] for k in ("width", "input_size", "num_classes") if k in spec}
    n_threads = threads if isinstance(threads, int) else None
    if name == "engine":
        from ..engine import Engine  # noqa: PLC0415

        engine = Engine(resnet18_workload(**model_args).folded, threads=threads, cpu_class=spec.get("cpu_class"))
        return engine.run, engine.kernels
    from ..kernels.threads import usable_cpus  # noqa: PLC0415

    n_threads = n_threads or usable_cpus()
    if name == "pytorch_fp32":
        import torch  # noqa: PLC0415

        from .torch_baseline import frozen_baseline  # noqa: PLC0415

        torch.set_num_threads(n_threads)
        return frozen_baseline(resnet18_workload(**model_args).folded, x), None
    from . import torch_peers  # noqa: PLC0415

    plain = {"width": model_args.get("width", 1.0), "num_classes": model_args.get("num_classes", 1000)}
    if name == "pytorch_int8":
        import torch  # noqa: PLC0415

        torch.set_num_threads(n_threads)
        return torch_peers.pytorch_int8(x, **plain), None
    if name in ("onnxruntime_fp32", "onnxruntime_int8"):
        return torch_peers.onnxruntime_session(x, int8=name.endswith("int8"), threads=n_threads, **plain), None
    raise ValueError(f"runtime: expected one of {', '.join(PEERS)}, got {name!r}")


def worker_main(argv: list[str]) -> int:
    """The worker process of runtime ``argv[0]`` (spec ``argv[1]``, JSON): answer timing requests
    ``{"batch", "repeats", "warmup", "settle", "seconds"}`` (see
    :func:`~.timing.timed_calls`; ``seconds`` is the least total timed) with
    ``{"times", "top1", "kernels"}``."""
    from .timing import timed_calls  # noqa: PLC0415
    from .workload import resnet18_workload  # noqa: PLC0415

    name, spec = argv[0], json.loads(argv[1])
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # libraries' prints must not reach the protocol stream
    model_args = {k: spec[k] for k in ("width", "input_size", "num_classes") if k in spec}
    workload = resnet18_workload(**model_args)
    runners: dict = {}
    protocol.write(json.dumps({"ready": name}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        batch = int(request["batch"])
        x = workload.batch(batch)
        if batch not in runners:
            runners[batch] = _runner(name, spec, x)
        run, kernels = runners[batch]
        times = timed_calls(lambda: run(x), int(request["repeats"]), int(request.get("warmup", 1)),
                            float(request.get("settle", 0.0)), min_seconds=float(request.get("seconds", 0.0)))
        top1 = np.asarray(run(x)).argmax(axis=1).tolist()
        protocol.write(json.dumps({"times": times, "top1": top1, "kernels": kernels}) + "\n")
        protocol.flush()
    return 0


# --------------------------------------------------------------------------------------
# the parent side


class PeerProcess:
    """One runtime in its own process (a context manager): :meth:`measure` times
    ``repeats`` calls on a batch (and more until ``seconds`` have been timed) and returns
    ``{"times": [s, ...], "top1": [...]}``."""

    def __init__(self, name: str, spec: dict, env: dict | None = None, timeout: float = 900.0):
        self.name = name
        self.timeout = timeout
        command = [sys.executable, "-c", "import sys; from sttn_sim.bench.peers import worker_main; "
                   "sys.exit(worker_main(sys.argv[1:]))", name, json.dumps(spec)]
        self.process = subprocess.Popen(command,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self._read()
        if ready.get("ready") != name:  # pragma: no cover - a worker that failed to start
            raise RuntimeError(f"benchmark worker {name!r} did not start: {ready}")

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait(timeout=self.timeout)
            raise RuntimeError(f"benchmark worker {self.name!r} exited with code {code} (see its stderr above)")
        return json.loads(line)

    def measure(self, batch: int, repeats: int, warmup: int = 1, settle: float = 0.0, seconds: float = 0.0) -> dict:
        self.process.stdin.write(json.dumps({"batch": batch, "repeats": repeats, "warmup": warmup,
                                             "settle": settle, "seconds": seconds}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.process.kill()
                self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def busy_loop(seconds: float) -> None:  # pragma: no cover - runs in the competitor process
    """A plain Python busy loop (the simplest CPU-bound competitor)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


__all__ = ["PEERS", "available_peers", "worker_main", "PeerProcess", "busy_loop"]
