"""``python -m sttn_sim.bench``: how fast is packed ternary inference on this CPU?

Prints, from one run on one machine (all ratios are against baselines measured in
the same run):

1. packed ternary GEMM GMAC/s on the ResNet-18 im2col shapes and its ratio to numpy
   float32 GEMM of the same shape (:func:`sttn_sim.kernels.bench_gemm.benchmark_gemm`);
2. end-to-end time of the full-width official STTN ResNet-18 at 224×224, batch 1 and
   8, through the packed engine — and, when PyTorch is importable, the same folded
   model as a TorchScript-frozen float32 PyTorch module (ternary weights as floats
   s·t, thresholds as float comparisons) with the ratio; the column is left out
   cleanly when PyTorch is not installed;
3. the cost of recording activation statistics while running the engine (ratio of
   the run time with an activation recorder to the time without).

Times are medians of repeated runs after warm-up; the number of threads is printed.
Set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE aside for a fair numpy baseline (a warning
is printed if they are set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd

from .kernels.bench_gemm import median_time


def torch_module_from_folded(folded):
    """A float32 PyTorch module computing the folded model (for the baseline only)."""
    import torch
    import torch.nn.functional as F

    from .rules import batchnorm_affine

    class Folded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ops = []
            for layer in folded.layers:
                p, a = layer.params, layer.attrs
                t = {}
                if layer.kind in ("conv", "ternary_conv", "linear", "ternary_linear"):
                    if layer.kind.startswith("ternary"):
                        codes = p["codes"].astype(np.float32)
                        w = codes * p["scale"].astype(np.float32).reshape((-1,) + (1,) * (codes.ndim - 1))
                        if a.get("epilogue") == "none":
                            w = codes  # integer accumulator feeds an integer threshold
                        bias = None if a.get("epilogue") == "none" else p["bias"]
                    else:
                        w, bias = p["weight"], p.get("bias")
                    t["w"] = torch.from_numpy(np.ascontiguousarray(w, np.float32))
                    t["b"] = None if bias is None else torch.from_numpy(np.asarray(bias, np.float32))
                elif layer.kind == "batchnorm":
                    g, h = batchnorm_affine(layer)
                    t["g"], t["h"] = torch.tensor(g, dtype=torch.float32), torch.tensor(h, dtype=torch.float32)
                elif layer.kind == "prelu":
                    t["w"] = torch.from_numpy(np.asarray(p["weight"], np.float32))
                elif layer.kind == "threshold":
                    for k in ("direction", "lo", "hi", "constant"):
                        t[k] = torch.tensor(np.asarray(p[k], np.float32))
                self.ops.append((layer, t))

        def forward(self, x):
            values = {"input": x}
            for layer, t in self.ops:
                a = layer.attrs
                xs = [values[s] for s in layer.inputs]
                v = xs[0]
                kind = layer.kind
                if kind in ("conv", "ternary_conv"):
                    y = F.conv2d(v, t["w"], t["b"], stride=a["stride"], padding=a["padding"])
                elif kind in ("linear", "ternary_linear"):
                    y = F.linear(v, t["w"], t["b"])
                elif kind == "batchnorm":
                    shape = (1, -1) + (1,) * (v.dim() - 2)
                    y = v * t["g"].view(shape) + t["h"].view(shape)
                elif kind == "prelu":
                    y = F.prelu(v, t["w"])
                elif kind == "relu":
                    y = F.relu(v)
                elif kind == "threshold":
                    shape = (1, -1) + (1,) * (v.dim() - 2)
                    z = v * t["direction"].view(shape)
                    y = (z >= t["hi"].view(shape)).float() - (z < t["lo"].view(shape)).float()
                elif kind == "maxpool":
                    y = F.max_pool2d(v, a["kernel"], a["stride"], a.get("padding", 0))
                elif kind == "avgpool":
                    y = F.avg_pool2d(v, a["kernel"], a["stride"])
                elif kind == "add":
                    y = v + xs[1]
                elif kind == "channel_pad":
                    y = torch.cat([v, torch.zeros((v.shape[0], a["out_channels"] - v.shape[1]) + tuple(v.shape[2:]))], 1)
                elif kind == "flatten":
                    y = v.flatten(1)
                else:
                    raise ValueError(kind)
                values[layer.name] = y
            return values[folded.output]

    return Folded().eval()


def benchmark_end_to_end(repeats: int = 20, batches=(1, 8), progress=None) -> pd.DataFrame:
    """Full-width STTN ResNet-18 at 224×224: engine against PyTorch (when installed)."""
    from .engine import Engine
    from .fold import fold
    from .synthetic import synthetic_input, synthetic_model

    model = synthetic_model("sttn_resnet18", seed=0, width=1.0, input_size=224, num_classes=1000,
                            calibration_batch=2)
    folded = fold(model)
    engine = Engine(folded)
    try:
        import torch

        torch_model = torch_module_from_folded(folded)
    except ImportError:
        torch = torch_model = None
    rows = []
    for batch in batches:
        x = synthetic_input(model, batch, seed=1)
        row = {"batch": batch, "engine_ms": 1000 * median_time(lambda: engine.run(x), repeats)}
        row["engine_ms_per_image"] = row["engine_ms"] / batch
        if torch is not None:
            with torch.no_grad():
                xt = torch.from_numpy(x)
                frozen = torch.jit.freeze(torch.jit.trace(torch_model, xt))
                row["pytorch_ms"] = 1000 * median_time(lambda: frozen(xt), repeats, warmup=3)
                ref = frozen(xt).numpy()
            row["engine_vs_pytorch"] = row["engine_ms"] / row["pytorch_ms"]
            row["top1_agree_with_pytorch"] = int((engine.run(x).argmax(1) == ref.argmax(1)).sum())
        rows.append(row)
        if progress:
            progress(f"end-to-end batch {batch} done")
    return pd.DataFrame(rows)


def benchmark_recording(repeats: int = 10, batches=(8, 1)) -> pd.DataFrame:
    """Engine run time with an activation recorder against without (full-width ResNet-18,
    224x224), for each batch size, interleaved run by run.

    Batch 8 is the statistics-collection case (a dataset in batches); batch 1 shows the
    per-layer fixed costs. The recorder is made once and warmed up, as in use (it
    accumulates every batch); the one-off cost of preparing it for a model (MAC maps,
    accumulators) is reported apart (``recorder_setup_ms``)."""
    from .engine import Engine
    from .fold import fold
    from .synthetic import synthetic_input, synthetic_model

    try:
        from .stats.activations import ActivationRecorder
    except ImportError:
        return pd.DataFrame()
    model = synthetic_model("sttn_resnet18", seed=0, width=1.0, input_size=224, num_classes=1000,
                            calibration_batch=2)
    folded = fold(model)
    engine = Engine(folded)
    rows = []
    for batch in batches:
        x = synthetic_input(model, batch, seed=1)
        recorder = ActivationRecorder()
        start = time.perf_counter()
        recorder.on_batch_start(folded, 0)  # prepares the statistics of every quantizer
        setup = time.perf_counter() - start
        engine.run(x)
        engine.run(x, recorder=recorder)
        plain, recorded = [], []
        for _ in range(repeats):  # interleaved, so that drifts of the host hit both alike
            start = time.perf_counter()
            engine.run(x)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.run(x, recorder=recorder)
            recorded.append(time.perf_counter() - start)
        plain_ms, recorded_ms = 1000 * float(np.median(plain)), 1000 * float(np.median(recorded))
        rows.append({"batch": batch, "engine_ms": plain_ms, "engine_with_recorder_ms": recorded_ms,
                     "recording_overhead": recorded_ms / plain_ms, "recorder_setup_ms": 1000 * setup})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sttn_sim.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (median reported)")
    p.add_argument("--skip-gemm", action="store_true")
    p.add_argument("--skip-end-to-end", action="store_true")
    p.add_argument("--skip-recording", action="store_true")
    p.add_argument("--json", action="store_true", help="print the tables as JSON")
    args = p.parse_args(argv)

    import numba

    from .kernels.bench_gemm import benchmark_gemm, openblas_env_warning, thread_info

    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    warning = openblas_env_warning()
    if warning:
        say(warning)
    info = {"numba_threads": numba.get_num_threads(), **thread_info()}
    result = {"threads": info}
    say(f"threads: {info}")
    if not args.skip_gemm:
        say("packed ternary GEMM against numpy float32 GEMM ...")
        result["gemm"] = benchmark_gemm(repeats=args.repeats)
        if not args.json:
            print(result["gemm"].to_string(index=False))
    if not args.skip_end_to_end:
        say("full-width STTN ResNet-18, 224x224 ...")
        result["end_to_end"] = benchmark_end_to_end(args.repeats, progress=say)
        if not args.json:
            print(result["end_to_end"].to_string(index=False))
            if "pytorch_ms" not in result["end_to_end"]:
                print("(PyTorch is not installed: no PyTorch column)")
    if not args.skip_recording:
        say("recording overhead ...")
        result["recording"] = benchmark_recording(max(5, args.repeats // 2))
        if not args.json and len(result["recording"]):
            print(result["recording"].to_string(index=False))
    if args.json:
        print(json.dumps({k: (v.to_dict(orient="records") if isinstance(v, pd.DataFrame) else v)
                          for k, v in result.items()}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
