"""The training loop: seeded mini-batch Adam with a cosine schedule, records, checkpoints.

::

    from sttn_sim.builders import sttn_resnet18
    from sttn_sim.datasets import digits
    from sttn_sim.train import TrainConfig, train

    model = sttn_resnet18(width=0.25, blocks=4, stem="small", input_size=8, in_channels=1, num_classes=10)
    result = train(model, digits(), TrainConfig(method="sttn", epochs=20, seed=0, latent_init="pytorch"))
    result.history          # one row per epoch: loss, train/test accuracy, lr, seconds
    result.layer_history    # one row per epoch × ternary layer: sparsity, scales, learned interval
    result.model            # a sttn_sim Model (latent form for STTN) with metadata
    result.test_accuracy    # float64 evaluation of the final model on the test split

Determinism: the data order comes from ``numpy.random.default_rng(seed)``, the
initial weights from the builder's seed, or from ``seed`` with
``latent_init="pytorch"`` (PyTorch's default layer init for the latent kernels, what
the official code starts from) and for the float baseline's fresh kernels; Adam has no
randomness.  Two runs with the same arguments, on the same
machine and BLAS thread count, produce identical arrays.

A non-finite loss stops training with :class:`TrainingError`; the checkpoint file
(if any) still holds the last completed epoch (every save is atomic) and the error
carries that model as ``last_good``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm  # plain text bar: tqdm.auto warns in Jupyter without ipywidgets

from ..datasets import check_dataset
from ..errors import ModelError, SttnError
from ..graph import Model
from ..io import save_model
from ..reference import reference_forward
from ..stats.intervals import interval_statistics
from . import losses as L
from .network import Network, prepare_model
from .optim import Adam, cosine_lr
from .quant import STTN_GRADS, TRAIN_METHODS, HardQuant, SttnQuant


class TrainingError(SttnError):
    """Training could not continue (e.g. a non-finite loss).  ``last_good`` is the model
    at the end of the last completed epoch (or the initial model), ``checkpoint`` the
    file that still holds it (or None)."""

    def __init__(self, message: str, last_good: Model | None = None, checkpoint=None):
        super().__init__(message)
        self.last_good = last_good
        self.checkpoint = checkpoint


@dataclass
class TrainConfig:
    """Everything that determines a training run (recorded in the model's metadata)."""

    method: str = "sttn"            #: one of TRAIN_METHODS: a trainable registered method or "float"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.01                #: peak Adam learning rate
    lr_min: float = 0.0             #: end of the cosine schedule
    warmup_steps: int = 0
    weight_decay: float = 0.0       #: decoupled, on float conv/linear kernels only
    betas: tuple = (0.9, 0.999)
    seed: int = 0
    latent_init: str = "builder"    #: "builder" (the model's latent kernels) or "pytorch" (redrawn, seeded)
    sttn_grad: str = "official"     #: "official" or "exact" (see sttn_sim.train.quant)
    granularity: str = "channel"    #: hard-threshold statistics per output channel or per tensor
    fixed_delta: float = 0.05       #: Δ of the fixed-threshold baseline on the latent kernels (in [-1, 1])
    ttq_t: float = 0.05             #: TTQ: Δ = t·max|W|
    distill_weight: float = 0.0     #: λ in (1-λ)·CE + λ·T²·KL(teacher ‖ student)
    temperature: float = 4.0
    bn_momentum: float = 0.1
    shift_augment: int = 0          #: random shifts of up to this many pixels (0 = off)
    record_layers: bool = True
    eval_batch: int = 512
    progress: bool = True
    checkpoint: str | None = None   #: path; saved atomically after every epoch

    def validate(self) -> "TrainConfig":
        def bad(name, want):
            raise ModelError(f"TrainConfig.{name}={getattr(self, name)!r}: expected {want}")
        if self.method not in TRAIN_METHODS:
            bad("method", f"one of {', '.join(TRAIN_METHODS)}")
        if self.sttn_grad not in STTN_GRADS:
            bad("sttn_grad", f"one of {', '.join(STTN_GRADS)}")
        if self.latent_init not in ("builder", "pytorch"):
            bad("latent_init", "'builder' or 'pytorch'")
        if self.granularity not in ("channel", "tensor"):
            bad("granularity", "'channel' or 'tensor'")
        for name in ("epochs", "batch_size", "eval_batch"):
            if not isinstance(getattr(self, name), (int, np.integer)) or getattr(self, name) < 1:
                bad(name, "an integer >= 1")
        for name in ("lr", "temperature"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, "a finite number > 0")
        if not 0 <= self.distill_weight <= 1:
            bad("distill_weight", "a number in [0, 1]")
        if not (0 <= self.fixed_delta < 1):
            bad("fixed_delta", "a number in [0, 1) (latent kernels are clamped to [-1, 1])")
        if not (0 <= self.ttq_t <= 1):
            bad("ttq_t", "a number in [0, 1]")
        if self.shift_augment < 0:
            bad("shift_augment", "an integer >= 0")
        return self

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d


@dataclass
class TrainResult:
    model: Model                    #: exported, evaluable by sttn_sim (see Network.export)
    network: Network                #: the trained network (training representation)
    history: pd.DataFrame           #: one row per epoch
    layer_history: pd.DataFrame     #: one row per epoch × ternary layer
    config: TrainConfig
    test_accuracy: float            #: float64 evaluation of the final network
    test_accuracy_float32: float    #: float32 evaluation of the final network
    seconds: float
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# statistics


def layer_records(net: Network) -> list[dict]:
    """Per ternary layer: code fractions, scale, and the learned (STTN) or hard interval.

    For STTN, from the equivalent weight ``w = (W1 + W2)/2`` with the definitions of
    :mod:`sttn_sim.stats.intervals`: ``delta`` is the equivalent Δ (the hard threshold on
    |w| giving the same number of zeros), ``overlap`` the fraction of weights whose STTN
    code differs from the hard code at that Δ, ``best_delta`` / ``best_error_rate`` the
    best separating threshold and its error; ``zero_abs_max`` / ``nonzero_abs_min`` are
    the largest |w| coded 0 and the smallest coded ±1 (no hard threshold reproduces the
    codes when the first exceeds the second).  For the hard-threshold methods ``delta`` is
    the mean Δ actually used and ``overlap`` is 0.
    ``l2_rel`` = ||w - ŵ||²/||w||² and ``cosine`` compare w (hard methods: the latent
    kernel) with the kernel actually used, scaled to w (STTN: ŵ = α·t = W_eff/2).
    """
    rows = []
    for name, q in net.quantizers.items():
        p, aux = net.model[name].params, net.aux[name]
        codes, scale = q.codes_and_scale(p, aux)
        n = codes.size
        if isinstance(q, SttnQuant):
            w = (p["weight1"].astype(np.float64) + p["weight2"].astype(np.float64)) / 2.0
            w_hat = q.forward(p, aux)[0].astype(np.float64) / 2.0
        else:
            w = p["weight"].astype(np.float64)
            w_hat = q.forward(p, aux)[0].astype(np.float64)
        mag = np.abs(w).ravel()
        c = codes.ravel()
        zeros = int(np.sum(c == 0))
        rec = {"layer": name, "method": q.method, "weights": n, "sparsity": zeros / n,
               "frac_neg": float(np.mean(c < 0)), "frac_pos": float(np.mean(c > 0)),
               "scale_mean": float(np.mean(scale)),
               "l2_rel": float(np.sum((w - w_hat) ** 2) / max(np.sum(w * w), 1e-300)),
               "cosine": float(np.sum(w * w_hat) / max(np.sqrt(np.sum(w * w) * np.sum(w_hat * w_hat)), 1e-300))}
        zero_mag, nz_mag = mag[c == 0], mag[c != 0]
        rec["zero_abs_max"] = float(zero_mag.max()) if zero_mag.size else np.nan
        rec["nonzero_abs_min"] = float(nz_mag.min()) if nz_mag.size else np.nan
        if isinstance(q, SttnQuant):
            st = interval_statistics(w, codes)
            rec.update(delta=st["eq_delta"], overlap=st["overlap"], best_delta=st["best_delta"],
                       best_error_rate=st["best_error_rate"])
        else:
            rec["delta"] = float(np.mean(q.delta(p["weight"])))
            rec["overlap"] = 0.0
        if isinstance(q, HardQuant) and q.rule == "ttq":
            rec["scale_neg_mean"] = float(np.mean(aux["wn"]))
        rows.append(rec)
    return rows


# --------------------------------------------------------------------------------------
# helpers


def _accuracy_and_loss(net: Network, x, y, batch: int) -> tuple[float, float]:
    logits = net.predict(x, batch).astype(np.float64)
    loss, _ = L.cross_entropy(logits, y)
    return float(np.mean(logits.argmax(1) == y)), loss


def _as_float64(net: Network) -> Network:
    """A float64 copy of ``net`` (same quantizers, aux copied) for exact evaluation."""
    model = net.model.copy()
    copy = Network.__new__(Network)
    copy.__dict__.update(net.__dict__)
    copy.model, copy.dtype, copy._cache = model, np.dtype(np.float64), None
    for layer in model.layers:
        for k, v in layer.params.items():
            layer.params[k] = v.astype(np.float64)
    copy.aux = {n: {k: v.astype(np.float64) for k, v in a.items()} for n, a in net.aux.items()}
    return copy


def _teacher_logits(teacher, x) -> np.ndarray:
    if teacher is None:
        return None
    if isinstance(teacher, TrainResult):
        teacher = teacher.network
    if isinstance(teacher, Network):
        return teacher.predict(x).astype(np.float64)
    if isinstance(teacher, Model):
        return reference_forward(teacher, np.asarray(x, np.float64))
    raise ModelError(f"teacher: expected a Model, Network or TrainResult, got {type(teacher).__name__}")


def _shift(x, rng, k):
    """Random integer translations by up to k pixels (zero fill), one per image."""
    n, _, h, w = x.shape
    pad = np.pad(x, ((0, 0), (0, 0), (k, k), (k, k)))
    dy = rng.integers(0, 2 * k + 1, size=n)
    dx = rng.integers(0, 2 * k + 1, size=n)
    out = np.empty_like(x)
    for i in range(n):
        out[i] = pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


# --------------------------------------------------------------------------------------
# the loop


def train(model: Model, data, config: TrainConfig | None = None, *, teacher=None, command: str | None = None,
          **overrides) -> TrainResult:
    """Train ``model`` (a latent-form model, e.g. from :mod:`sttn_sim.builders`) on
    ``data = (x_train, y_train, x_test, y_test)`` with ``config`` (keyword ``overrides``
    replace its fields).  ``teacher`` (a trained Model, Network or TrainResult) enables
    distillation with ``config.distill_weight``.  ``command`` is stored in the metadata.
    """
    cfg = dataclasses.replace(config or TrainConfig(), **overrides).validate()
    if not isinstance(model, Model):
        raise ModelError(f"train() expects a sttn_sim Model, got {type(model).__name__}")
    try:
        x_tr, y_tr, x_te, y_te = data
    except (TypeError, ValueError):
        raise ModelError("train(): data must be a tuple (x_train, y_train, x_test, y_test)") from None
    check_dataset(model, x_tr, y_tr, name="training data")
    check_dataset(model, x_te, y_te, name="test data")
    x_tr, x_te = x_tr.astype(np.float32), x_te.astype(np.float32)
    y_tr, y_te = np.asarray(y_tr, np.int64), np.asarray(y_te, np.int64)
    if cfg.distill_weight > 0 and teacher is None:
        raise ModelError("TrainConfig.distill_weight > 0 needs a teacher")

    net = Network(prepare_model(model, cfg.method, seed=cfg.seed, latent_init=cfg.latent_init), dtype=np.float32, sttn_grad=cfg.sttn_grad,
                  granularity=cfg.granularity, fixed_delta=cfg.fixed_delta, ttq_t=cfg.ttq_t,
                  bn_momentum=cfg.bn_momentum)
    t_logits = _teacher_logits(teacher, x_tr) if cfg.distill_weight > 0 else None
    opt = Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    n = len(x_tr)
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    base_meta = {"method": cfg.method, "seed": cfg.seed, "epochs": cfg.epochs, "train_config": cfg.as_dict()}
    if command:
        base_meta["training_command"] = command

    history, layer_rows = [], []
    if cfg.record_layers:
        layer_rows += [dict(r, epoch=0) for r in layer_records(net)]
    last_good = net.copy_state()
    last_epoch = 0
    t_start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.method}", unit="epoch", disable=not cfg.progress,
               leave=False)
    step = 0
    for epoch in bar:
        t0 = time.perf_counter()
        order = rng.permutation(n)
        loss_sum, correct = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb = x_tr[idx]
            if cfg.shift_augment:
                xb = _shift(xb, rng, cfg.shift_augment)
            logits = net.forward(xb, train=True)
            loss, dlogits = L.cross_entropy(logits.astype(np.float64), y_tr[idx])
            if t_logits is not None:
                kd, dkd = L.distillation(logits, t_logits[idx], cfg.temperature)
                lam = cfg.distill_weight
                loss = (1 - lam) * loss + lam * kd
                dlogits = (1 - lam) * dlogits + lam * dkd
            if not np.isfinite(loss) or not np.all(np.isfinite(logits)):
                net.load_state(last_good)
                good = net.export(dict(base_meta, epochs_completed=last_epoch))
                where = f"; the checkpoint {cfg.checkpoint} still holds epoch {last_epoch}" if cfg.checkpoint else ""
                bar.close()
                raise TrainingError(
                    f"training stopped: the loss became non-finite ({loss}) at epoch {epoch}, batch {b + 1} "
                    f"(method {cfg.method}, lr {cfg.lr}){where}; lower the learning rate or check the data",
                    last_good=good, checkpoint=cfg.checkpoint)
            grads = net.backward(dlogits)
            opt.step(grads, cosine_lr(step, total, cfg.lr, cfg.lr_min, cfg.warmup_steps))
            net.post_step()
            step += 1
            loss_sum += loss * len(idx)
            correct += int(np.sum(logits.argmax(1) == y_tr[idx]))
        test_acc, test_loss = _accuracy_and_loss(net, x_te, y_te, cfg.eval_batch)
        rec = {"epoch": epoch, "lr": cosine_lr(step - 1, total, cfg.lr, cfg.lr_min, cfg.warmup_steps),
               "train_loss": loss_sum / n, "train_acc": correct / n, "test_loss": test_loss, "test_acc": test_acc,
               "seconds": time.perf_counter() - t0}
        history.append(rec)
        if cfg.record_layers:
            layer_rows += [dict(r, epoch=epoch) for r in layer_records(net)]
        last_good, last_epoch = net.copy_state(), epoch
        if cfg.checkpoint:
            save_model(net.export(dict(base_meta, epochs_completed=epoch, test_accuracy_float32=test_acc)),
                       cfg.checkpoint)
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", train=f"{rec['train_acc']:.3f}", test=f"{test_acc:.3f}")
    bar.close()
    seconds = time.perf_counter() - t_start

    acc32 = history[-1]["test_acc"]
    acc64, _ = _accuracy_and_loss(_as_float64(net), x_te, y_te, cfg.eval_batch)
    meta = dict(base_meta, epochs_completed=cfg.epochs, test_accuracy=acc64, test_accuracy_float32=acc32,
                train_accuracy=history[-1]["train_acc"], test_samples=int(len(y_te)),
                train_samples=int(n), train_seconds=round(seconds, 2))
    exported = net.export(meta)
    hist = pd.DataFrame(history)
    lh = pd.DataFrame(layer_rows)
    if len(lh):
        lh = lh[["epoch"] + [c for c in lh.columns if c != "epoch"]]
    return TrainResult(exported, net, hist, lh, cfg, acc64, acc32, seconds)
