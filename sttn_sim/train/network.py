"""Training directly on a :class:`~sttn_sim.graph.Model`: forward, backward, export.

:class:`Network` executes the layers of a model in order (the graph is already
topological), keeps what each backward needs, and on ``backward`` walks the layers in
reverse, summing the gradients of values read by several layers (residual
connections) and writing parameter gradients keyed by ``(layer name, param name)``.
The parameters ARE the model's numpy arrays, updated in place by the optimiser, so an
STTN model trained here is a sttn_sim Model that folds and verifies as it is.

Method conversions (:func:`prepare_model`), applied to a latent model from
:mod:`sttn_sim.builders`:

* ``"sttn"``: unchanged (``sttn_conv``/``sttn_linear`` with weight1/weight2/bias1/bias2).
* ``"twn"``, ``"ttq"``, ``"fixed"``: each ``sttn_*`` layer becomes a ``conv``/``linear``
  holding ONE latent kernel (the model's ``weight1``, i.e. the same draw STTN's first
  kernel starts from) with bias
  ``bias1 + bias2`` and ``attrs["train_quant"] = method``.  This graph is a
  training-time representation only: a plain sttn_sim evaluation of it would use the
  float latent kernel.  Use :meth:`Network.export` for an evaluable model.
* ``"float"``: ``sttn_*`` → ``conv``/``linear`` with fresh He-initialised float weights
  (seeded), and every ``ternary_act`` is removed (full-precision activations); the
  architecture is otherwise identical.

Export (:meth:`Network.export`):

* ``sttn`` → the latent model itself (form ``"latent"``): folds and verifies.
* ``twn`` / ``fixed`` → ``ter_conv``/``ter_linear`` holding ``α·t`` (one magnitude per
  output channel, so it is the merged form ``α(B1 + B2)`` with scale 2·(α/2)); form
  ``"merged"``: folds (codes and scale recovered per channel) and verifies.
* ``ttq`` → ``ter_conv``/``ter_linear`` holding ``W_p·[t=+1] - W_n·[t=-1]`` with
  ``attrs["ternary_method"] = "ttq"`` (two magnitudes per channel); form ``"merged"``:
  ``fold`` recovers the codes and both scales per channel into the asymmetric folded
  form (``scale = W_p``, ``scale_neg = W_n``), which the packed engine runs as two exact
  partial sums.
* ``float`` → form ``"float"``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError, ShapeError
from ..graph import Layer, Model
from ..kinds import kinds_where, weighted_kind
from ..walk import walk
from .quant import TRAIN_METHODS, HardQuant, SttnQuant, make_quantizer


def trainable_kinds() -> tuple[str, ...]:
    """The registered kinds training can run (their ``trainable`` flag)."""
    return kinds_where(lambda kind: kind.trainable)


TRAINABLE_KINDS = trainable_kinds()


# --------------------------------------------------------------------------------------
# method conversion


LATENT_INITS = ("builder", "pytorch")


def _reinit_latent(model: Model, seed: int) -> None:
    """PyTorch's default Conv2d/Linear initialisation for every latent kernel:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)), W1 and W2 drawn
    independently, seeded; float32.  An exact zero (sign 0) is redrawn."""
    rng = np.random.default_rng([seed, 104729])
    for layer in model.layers:
        if layer.ternary_form != "latent":
            continue
        for key in ("weight1", "weight2"):
            shape = layer.params[key].shape
            bound = 1.0 / np.sqrt(int(np.prod(shape[1:])))
            w = rng.uniform(-bound, bound, size=shape).astype(np.float32)
            while np.any(w == 0):
                w[w == 0] = rng.uniform(-bound, bound, size=int(np.sum(w == 0))).astype(np.float32)
            layer.params[key] = w


def prepare_model(model: Model, method: str = "sttn", *, seed: int = 0, latent_init: str = "builder") -> Model:
    """A copy of the latent ``model`` converted to the training representation of ``method``.

    ``latent_init="pytorch"`` first redraws every latent kernel with PyTorch's default
    layer initialisation (what the official code starts from), seeded by ``seed``;
    ``"builder"`` keeps the model's own latent kernels."""
    if not isinstance(model, Model):
        raise ModelError(f"prepare_model() expects a sttn_sim Model, got {type(model).__name__}")
    if method not in TRAIN_METHODS:
        raise ModelError(f"method {method!r}: expected one of {', '.join(TRAIN_METHODS)}")
    bad = [f"{l.name} ({l.kind})" for l in model.layers if not l.spec.trainable]
    if bad:
        raise ModelError(f"model {model.arch!r}: cannot train layers of kind {', '.join(bad[:5])}; "
                         f"trainable kinds: {', '.join(trainable_kinds())} (train the latent form, not a merged or "
                         f"folded one)")
    if latent_init not in LATENT_INITS:
        raise ModelError(f"latent_init={latent_init!r}: expected one of {LATENT_INITS}")
    model = model.copy()
    if latent_init == "pytorch":
        _reinit_latent(model, seed)
    if method == "sttn":
        return model
    rng = np.random.default_rng([seed, 7919])
    layers, rename = [], {}
    for layer in model.layers:
        inputs = [rename.get(s, s) for s in layer.inputs]
        if layer.ternary_form == "latent":
            kind = weighted_kind(layer.spec.family, "float")
            p = layer.params
            bias = None
            for key in ("bias1", "bias2"):
                if key in p:
                    bias = p[key].astype(np.float32) if bias is None else bias + p[key]
            if method == "float":
                fan_in = int(np.prod(p["weight1"].shape[1:]))
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=p["weight1"].shape).astype(np.float32)
                attrs = dict(layer.attrs)
            else:
                w = np.clip(p["weight1"], -1, 1).astype(np.float32)
                attrs = dict(layer.attrs, train_quant=method)
            params = {"weight": w}
            if bias is not None:
                params["bias"] = bias.astype(np.float32)
            layers.append(Layer(layer.name, kind, inputs, attrs, params))
        elif layer.kind == "ternary_act" and method == "float":
            rename[layer.name] = inputs[0]
        else:
            layers.append(Layer(layer.name, layer.kind, inputs, dict(layer.attrs), layer.params))
    if model.output in rename:
        raise ModelError(f"model {model.arch!r}: the output layer is a ternary activation; nothing to train")
    form = "float" if method == "float" else model.form
    meta = dict(model.metadata, train_method=method)
    return Model(model.arch, model.input_shape, layers, form, meta)


# --------------------------------------------------------------------------------------
# the network


class Network:
    """Forward / backward over a prepared model (see :func:`prepare_model`).

    ``dtype`` is the compute dtype (float32 for training, float64 for gradient checks):
    every float parameter of the model is converted to it in place.  ``quantizers``
    maps ternary layer names to their weight quantizer (built from the layers' kinds and
    ``attrs["train_quant"]`` when omitted).  ``aux`` holds extra trainable parameters
    (TTQ's W_p/W_n) keyed by layer name.
    """

    def __init__(self, model: Model, *, dtype=np.float32, sttn_grad: str = "official", granularity: str = "channel",
                 fixed_delta: float = 0.05, ttq_t: float = 0.05, bn_momentum: float = 0.1, ste_clip: float = 1.0):
        self.model = model
        self.dtype = np.dtype(dtype)
        self.bn_momentum = float(bn_momentum)
        self.ste_clip = float(ste_clip)
        self.method = model.metadata.get("train_method", "sttn" if model.ternary_layers() else "float")
        self.quantizers: dict[str, SttnQuant | HardQuant] = {}
        self.aux: dict[str, dict[str, np.ndarray]] = {}
        for layer in model.layers:
            if not layer.spec.trainable:
                raise ModelError(f"layer {layer.name!r}: kind {layer.kind!r} cannot be trained; "
                                 f"trainable kinds: {', '.join(trainable_kinds())}")
            for k, v in layer.params.items():
                if v.dtype != self.dtype:
                    layer.params[k] = v.astype(self.dtype)
            q = None
            if layer.ternary_form == "latent":
                q = SttnQuant(sttn_grad)
            elif "train_quant" in layer.attrs:
                q = make_quantizer(layer.attrs["train_quant"], granularity=granularity,
                                   fixed_delta=fixed_delta, ttq_t=ttq_t)
            if q is not None:
                q.post_step(layer.params, {})
                self.quantizers[layer.name] = q
                self.aux[layer.name] = {k: v.astype(self.dtype) for k, v in
                                        (q.init_aux(layer.params) if isinstance(q, HardQuant) else {}).items()}
        self._cache: dict | None = None
        self.training = False  #: True during a forward pass in training mode (BN batch statistics)

    # -- parameters -------------------------------------------------------------------
    def parameters(self):
        """``[(key, array, group)]`` for every trainable array.  ``key`` is
        ``(layer, param)``; ``group`` is ``"latent"`` (ternary latent kernels),
        ``"weight"`` (float conv/linear kernels), ``"scale"`` (TTQ W_p/W_n) or ``"other"``
        (biases, BN affine, PReLU slopes).  Running BN statistics are not parameters."""
        out = []
        for layer in self.model.layers:
            q = self.quantizers.get(layer.name)
            for pname, arr in layer.params.items():
                if pname in ("running_mean", "running_var"):
                    continue
                if q is not None and pname in q.latent_keys:
                    group = "latent"
                elif layer.kind in ("conv", "linear") and pname == "weight":
                    group = "weight"
                else:
                    group = "other"
                out.append(((layer.name, pname), arr, group))
            for aname, arr in self.aux.get(layer.name, {}).items():
                out.append(((layer.name, aname), arr, "scale"))
        return out

    def post_step(self):
        """Clamp latent kernels to [-1, 1] and keep TTQ scales >= 0 (after every update)."""
        for name, q in self.quantizers.items():
            q.post_step(self.model[name].params, self.aux[name])

    # -- forward ----------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False, *, keep: bool | None = None,
                record: dict | None = None) -> np.ndarray:
        """Logits for the batch ``x`` (N, *input_shape).

        ``train=True`` uses batch statistics in BN (and updates the running ones) and
        keeps the caches for :meth:`backward` (``keep`` overrides).  ``record`` (a dict)
        receives every layer's output by name.
        """
        want = tuple(self.model.input_shape)
        if not isinstance(x, np.ndarray) or x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ShapeError(f"input: expected shape (N, {', '.join(map(str, want))}) for model "
                             f"{self.model.arch!r}, got {getattr(x, 'shape', type(x).__name__)}")
        keep = train if keep is None else keep
        caches = {}

        def execute(layer: Layer, ins: list):
            y, cache = layer.spec.train_forward(layer, ins, self)
            if keep:
                caches[layer.name] = cache
            if record is not None:
                record[layer.name] = y
            return y

        self.training = train
        try:
            values = walk(self.model.layers, {"input": np.asarray(x, self.dtype)}, execute,
                          output=self.model.output, keep=keep or record is not None)
        finally:
            self.training = False
        self._cache = caches if keep else None
        return values[self.model.output]

    def effective_weights(self, layer: Layer):
        """``(W, b)`` a convolution or linear layer computes with: its weight quantizer's
        effective kernel for ternary and hard-threshold layers, the float kernel otherwise."""
        q = self.quantizers.get(layer.name)
        if q is not None:
            return q.forward(layer.params, self.aux[layer.name])
        return layer.params["weight"], layer.params.get("bias")

    def add_weight_grads(self, layer: Layer, dw, db, grads: dict) -> None:
        """Map the gradients of the effective ``(W, b)`` onto the layer's parameters."""
        name = layer.name
        q = self.quantizers.get(name)
        if q is not None:
            pg, ag = q.backward(layer.params, self.aux[name], dw, db)
            for k, v in {**pg, **ag}.items():
                grads[(name, k)] = v
            return
        grads[(name, "weight")] = dw
        if "bias" in layer.params:
            grads[(name, "bias")] = db

    # -- backward ---------------------------------------------------------------------
    def backward(self, dlogits: np.ndarray) -> dict:
        """Gradients ``{(layer, param): array}`` of the loss whose gradient with respect
        to the logits of the last :meth:`forward` (with ``keep``) is ``dlogits``."""
        if self._cache is None:
            raise ModelError("backward() needs a preceding forward(..., train=True) (or keep=True)")
        caches, grads = self._cache, {}
        dvals = {self.model.output: np.asarray(dlogits, self.dtype)}
        for layer in reversed(self.model.layers):
            dy = dvals.pop(layer.name, None)
            if dy is None:  # the output of this layer does not reach the loss
                continue
            din = layer.spec.train_backward(layer, dy, caches[layer.name], self, grads)
            for src, d in zip(layer.inputs, din):
                if d is None or src == "input":
                    continue
                dvals[src] = d if src not in dvals else dvals[src] + d
        self._cache = None
        return grads

    # -- evaluation -------------------------------------------------------------------
    def predict(self, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Eval-mode logits in batches."""
        return np.concatenate([self.forward(x[i:i + batch]) for i in range(0, len(x), batch)], axis=0)

    # -- export -----------------------------------------------------------------------
    def export(self, metadata: dict | None = None) -> Model:
        """A model sttn_sim can evaluate (see the module doc), parameters float32, copied."""
        layers = []
        for layer in self.model.layers:
            params = {k: v.astype(np.float32) for k, v in layer.params.items()}
            q = self.quantizers.get(layer.name)
            attrs = {k: v for k, v in layer.attrs.items() if k != "train_quant"}
            kind = layer.kind
            if isinstance(q, HardQuant):
                w_eff, b = q.forward(layer.params, self.aux[layer.name])
                params = {"weight": w_eff.astype(np.float32)}
                if b is not None:
                    params["bias"] = b.astype(np.float32)
                kind = weighted_kind(layer.spec.family, "merged")
                attrs["ternary_method"] = q.method
            layers.append(Layer(layer.name, kind, list(layer.inputs), attrs, params))
        form = {"sttn": "latent", "float": "float"}.get(self.method, "merged")
        meta = dict(self.model.metadata)
        meta.update(metadata or {})
        return Model(self.model.arch, self.model.input_shape, layers, form, meta)

    def copy_state(self) -> dict:
        """A snapshot of every array (parameters, running statistics, aux) for restoring."""
        return {"params": {l.name: {k: v.copy() for k, v in l.params.items()} for l in self.model.layers},
                "aux": {n: {k: v.copy() for k, v in a.items()} for n, a in self.aux.items()}}

    def load_state(self, state: dict) -> None:
        for layer in self.model.layers:
            for k, v in state["params"][layer.name].items():
                layer.params[k][...] = v
        for n, a in state["aux"].items():
            for k, v in a.items():
                self.aux[n][k][...] = v
