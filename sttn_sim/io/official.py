"""Official STTN checkpoints (PyTorch) ↔ the project's :class:`~sttn_sim.graph.Model`.

The official code saves a ResNet-18 variant (docs/design.md §2.3) in two forms:

* **training form** ``resnet18_bwx2``: ``torch.save({'epoch', 'arch', 'state_dict',
  'best_prec1', 'optimizer'})`` with two latent kernels per ternary layer
  (``features.N.conv1_1`` / ``conv1_2``, each with a bias) → a ``"latent"`` model
  whose ternary layers are ``sttn_conv`` (``weight1/bias1/weight2/bias2``);
* **merged form** ``resnet18_ter``: ``{'state_dict'}`` with one float kernel
  ``features.N.conv1 = α(B1+B2)`` → a ``"merged"`` model with ``ter_conv`` layers.
  Every merged kernel is checked on load to hold one non-zero magnitude per output
  channel (a ternary kernel), so :func:`~sttn_sim.fold.fold` recovers codes and scales.

The graph is always :func:`sttn_sim.builders.sttn_resnet18` (same layer names:
``features.0/1/2`` stem, ``features.4`` … ``features.11`` blocks, ``fc``); its
parameters are replaced by the checkpoint's.  Width is the stem channel count / 64,
the number of classes comes from ``fc.weight``.  A ``module.`` prefix (DataParallel)
is stripped; ``num_batches_tracked`` buffers, the optimizer state and other top-level
entries are ignored (``epoch`` and ``best_prec1`` are reported in the metadata).  The
checkpoint does not record the input size: it defaults to 224 (ImageNet, where the
official ``AvgPool2d(7)`` covers the final 7x7 map) and can be given.

:func:`save_official` writes either form back out as a zip archive that
``torch.load(path, weights_only=True)`` opens and the official model definition
loads with ``load_state_dict`` (strict).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Any

import numpy as np

from ..builders import sttn_resnet18
from ..errors import CheckpointError, ModelError, QuantizationError, ShapeError
from ..graph import Layer, Model
from ..quantizers import recover_merged_ternary, sttn_ternarize
from ..rules import BN_EPS
from .torch_reader import read_torch_file
from .torch_writer import write_torch_zip

__all__ = [
    "OFFICIAL_ARCHS",
    "DEFAULT_INPUT_SIZE",
    "load_official",
    "model_from_official",
    "official_layout",
    "official_state_dict",
    "save_official",
]

#: official ``arch`` string -> form
OFFICIAL_ARCHS = {"resnet18_bwx2": "bwx2", "resnet18_ter": "ter"}
_FORM_ARCH = {v: k for k, v in OFFICIAL_ARCHS.items()}
_MODEL_FORM = {"bwx2": "latent", "ter": "merged"}
DEFAULT_INPUT_SIZE = 224
_IGNORED_SUFFIX = ".num_batches_tracked"
_LATENT_KEY = re.compile(r"^features\.\d+\.conv\d_[12]\.weight$")
_MERGED_KEY = re.compile(r"^features\.\d+\.conv\d\.weight$")
_MAX_LISTED = 12


def _listing(names) -> str:
    names = list(names)
    shown = ", ".join(n if n.isprintable() and len(n) <= 100 else repr(n[:100]) for n in names[:_MAX_LISTED])
    return shown + (f" ... and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _text(value, limit: int = 60) -> str:
    """A short one-line description of any value from a file (never fails: ``repr`` of a
    10**5000 raises ValueError)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and any(
        k.endswith("features.0.weight") for k in obj)


def _scalar(value, key: str, where: str) -> float | None:
    """A number from a Python number or a 0-d / 1-element array; None for anything else.
    A number beyond float range (an integer epoch of 10**400) is refused, naming ``key``."""
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
            return float(value.reshape(()))
    except OverflowError:
        raise CheckpointError(f"{where}: key {key!r} holds {_text(value)}, a number beyond the float range") from None
    return None


def _official_keys(layer: Layer, form: str) -> dict[str, str]:
    """official key -> parameter name, for one layer of the template (required + optional)."""
    n = layer.name
    if layer.kind in ("conv", "linear", "ter_conv"):
        return {f"{n}.weight": "weight", f"{n}.bias": "bias"}
    if layer.kind == "sttn_conv":
        if form == "ter":
            return {f"{n}.weight": "weight", f"{n}.bias": "bias"}
        return {f"{n}_1.weight": "weight1", f"{n}_1.bias": "bias1", f"{n}_2.weight": "weight2", f"{n}_2.bias": "bias2"}
    if layer.kind == "batchnorm":
        return {f"{n}.{p}": p for p in ("weight", "bias", "running_mean", "running_var")}
    if layer.kind == "prelu":
        return {f"{n}.weight": "weight"}
    return {}


def _optional(key: str) -> bool:
    """Keys the official layout may lack: the stem conv has no bias in the official code."""
    return key == "features.0.bias"


def _detect_form(keys, arch, where: str) -> tuple[str, str]:
    """Phase 3: ``("bwx2" | "ter", how it was detected)`` from the keys, checked against
    the ``arch`` entry when there is one."""
    latent = any(_LATENT_KEY.match(k) for k in keys)
    merged = any(_MERGED_KEY.match(k) for k in keys)
    if latent and merged:
        raise CheckpointError(f"{where}: the state_dict mixes training-form keys (features.N.convK_1/_2) and "
                              f"merged-form keys (features.N.convK); expected one form")
    if not (latent or merged):
        raise CheckpointError(
            f"{where}: not an official STTN ResNet-18 state_dict: no key 'features.N.conv1_1.weight' "
            f"(resnet18_bwx2) or 'features.N.conv1.weight' (resnet18_ter); keys start: {_listing(sorted(keys))}")
    form = "bwx2" if latent else "ter"
    if arch is None:
        return form, "keys"
    if not isinstance(arch, str) or arch not in OFFICIAL_ARCHS:
        raise CheckpointError(f"{where}: arch {_text(arch)} is not supported (supported: {', '.join(OFFICIAL_ARCHS)})")
    if OFFICIAL_ARCHS[arch] != form:
        raise CheckpointError(f"{where}: arch {arch!r} but the keys are those of {_FORM_ARCH[form]!r}")
    return form, "arch and keys"


def _find_state_dict(obj, where: str, meta: dict[str, Any]) -> tuple[dict, Any]:
    """Phase 1: the state_dict inside ``obj`` and the official ``arch`` (or None).

    ``obj`` is the official ``{'state_dict', 'arch', 'epoch', 'best_prec1', ...}`` or a bare
    state_dict; ``epoch``, ``best_prec1`` and the names of other (ignored) top-level
    entries go into ``meta``.
    """
    if isinstance(obj, dict) and "state_dict" in obj:
        ignored = [k for k in obj if k not in ("state_dict", "arch", "epoch", "best_prec1")]
        if ignored:
            meta["ignored_entries"] = sorted(k if isinstance(k, str) else _text(k) for k in ignored)
        epoch = _scalar(obj.get("epoch"), "epoch", where)
        if epoch is not None and epoch.is_integer():
            meta["epoch"] = int(epoch)
        best = _scalar(obj.get("best_prec1"), "best_prec1", where)
        if best is not None and np.isfinite(best):
            meta["best_prec1"] = best
        state, arch = obj["state_dict"], obj.get("arch")
    elif _is_state_dict(obj):
        state, arch = obj, None
    else:
        top = ", ".join(sorted(k if isinstance(k, str) else _text(k) for k in obj)[:10]) if isinstance(obj, dict) \
            else type(obj).__name__
        raise CheckpointError(f"{where}: expected a dict with a 'state_dict' entry (official STTN checkpoint) or a "
                              f"bare state_dict; found {top}")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{where}: 'state_dict' must be a dict of str -> tensor")
    return state, arch


def _strip_prefix(state: dict, where: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Phase 2: the tensors under their keys without the DataParallel ``module.`` prefix,
    and short key -> original key (for messages)."""
    tensors: dict[str, np.ndarray] = {}
    original: dict[str, str] = {}
    for key, value in state.items():
        short = key[len("module."):] if key.startswith("module.") else key
        if short in tensors:
            raise CheckpointError(f"{where}: key {key!r} appears both with and without the 'module.' prefix")
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{where}: key {key!r} is a {type(value).__name__}, expected a tensor")
        tensors[short] = value
        original[short] = key
    return tensors, original


def official_layout(base: int, in_channels: int, num_classes: int, form: str) -> dict[str, tuple[str, str, tuple]]:
    """The official ResNet-18 state_dict (docs/design.md §2.3) of stem width ``base``: key
    (without ``module.``) -> (layer name, kind, shape), in the builder's layer order.

    Stem ``features.0`` conv 7x7 ``[base, in_channels, 7, 7]`` (its bias optional),
    ``features.1`` BN, ``features.2`` PReLU; blocks ``features.4``-``11`` with channels
    ``base x (1,1,2,2,4,4,8,8)``, each ``bn1``, ``conv1`` (``conv1_1``/``conv1_2`` in the
    training form ``"bwx2"``) 3x3, ``bn_add1``, ``prelu1``, ``bn2``, ``conv2``, ``bn_add2``,
    ``prelu2``; ``fc`` ``[num_classes, 8 base]``.  A test checks it against
    :func:`sttn_sim.builders.sttn_resnet18`.  Nothing is allocated: this is what a file's
    tensors are checked against before the model is built.
    """
    layout: dict[str, tuple[str, str, tuple]] = {}

    def add(name: str, kind: str, shapes: dict[str, tuple]) -> None:
        for param, shape in shapes.items():
            layout[f"{name}.{param}"] = (name, kind, shape)

    def batchnorm(name: str, c: int) -> None:
        add(name, "batchnorm", {p: (c,) for p in ("weight", "bias", "running_mean", "running_var")})

    def ternary_conv(name: str, c_in: int, c_out: int) -> None:
        shapes = {"weight": (c_out, c_in, 3, 3), "bias": (c_out,)}
        for suffix in (("_1", "_2") if form == "bwx2" else ("",)):
            for param, shape in shapes.items():
                layout[f"{name}{suffix}.{param}"] = (name, "sttn_conv", shape)

    add("features.0", "conv", {"weight": (base, in_channels, 7, 7), "bias": (base,)})
    batchnorm("features.1", base)
    add("features.2", "prelu", {"weight": (base,)})
    channels = [base, base, base, 2 * base, 2 * base, 4 * base, 4 * base, 8 * base, 8 * base]
    for i in range(8):
        name, c_in, c_out = f"features.{4 + i}", channels[i], channels[i + 1]
        batchnorm(f"{name}.bn1", c_in)
        ternary_conv(f"{name}.conv1", c_in, c_out)
        batchnorm(f"{name}.bn_add1", c_out)
        add(f"{name}.prelu1", "prelu", {"weight": (c_out,)})
        batchnorm(f"{name}.bn2", c_out)
        ternary_conv(f"{name}.conv2", c_out, c_out)
        batchnorm(f"{name}.bn_add2", c_out)
        add(f"{name}.prelu2", "prelu", {"weight": (c_out,)})
    add("fc", "linear", {"weight": (num_classes, 8 * base), "bias": (num_classes,)})
    return layout


def _layout_for(tensors: dict[str, np.ndarray], form: str, key_of, where: str) -> tuple[dict, int, int, int]:
    """Phase 4 (mapping), first step: the official layout the checkpoint must fill (width =
    stem channels / 64, classes from ``fc.weight``, input channels from the stem), and
    (base, in_channels, num_classes)."""
    stem = tensors.get("features.0.weight")
    fc = tensors.get("fc.weight")
    if stem is None or fc is None:
        missing = [k for k, v in (("features.0.weight", stem), ("fc.weight", fc)) if v is None]
        raise CheckpointError(f"{where}: missing keys: {', '.join(missing)} (needed to infer width and classes)")
    if stem.ndim != 4 or stem.shape[2:] != (7, 7) or stem.shape[0] < 1 or stem.shape[1] < 1:
        raise CheckpointError(f"{where}: key {key_of('features.0.weight')!r} has shape {list(stem.shape)}, "
                              f"expected [C, in_channels, 7, 7] (the official conv7x7 stem)")
    if fc.ndim != 2 or fc.shape[0] < 1:
        raise CheckpointError(f"{where}: key {key_of('fc.weight')!r} has shape {list(fc.shape)}, "
                              f"expected [classes, features]")
    base, in_channels, num_classes = int(stem.shape[0]), int(stem.shape[1]), int(fc.shape[0])
    return official_layout(base, in_channels, num_classes, form), base, in_channels, num_classes


def _match_keys(tensors: dict[str, np.ndarray], layout: dict, *, strict: bool, key_of, where: str,
                meta: dict[str, Any], layout_text: str) -> None:
    """Phase 4, second step: every key of the official layout is present (the stem bias may be
    absent; with ``strict=False`` so may any bias) and no other key is (BatchNorm
    ``num_batches_tracked`` buffers are ignored; with ``strict=False`` unexpected keys
    are recorded in ``meta``)."""
    batchnorms = {name for name, kind, _ in layout.values() if kind == "batchnorm"}
    ignored = {k for k in tensors if k.endswith(_IGNORED_SUFFIX) and k[: -len(_IGNORED_SUFFIX)] in batchnorms}
    absent = [key for key in layout if key not in tensors and not _optional(key)]
    missing = [key for key in absent if strict or not key.endswith(".bias")]
    unexpected = [key_of(k) for k in tensors if k not in layout and k not in ignored]
    if absent and not missing:
        meta["missing_biases"] = absent
    if missing or (unexpected and strict):
        parts = []
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected and strict:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        raise CheckpointError(f"{where}: the state_dict does not match {layout_text}: " + "; ".join(parts))
    if unexpected:
        meta["unexpected_keys"] = unexpected


def _check_shapes(tensors: dict[str, np.ndarray], layout: dict, form: str, key_of, where: str, width: float) -> None:
    """Phase 4, third step: every tensor has its layout shape (a PReLU may have one shared
    slope, shape [1])."""
    for key, (layer, kind, want) in layout.items():
        value = tensors.get(key)
        if value is not None and not (value.shape == want or (kind == "prelu" and value.shape == (1,))):
            raise CheckpointError(f"{where}: key {key_of(key)!r} has shape {list(value.shape)}, expected "
                                  f"{list(want)} (layer {layer!r}, {_FORM_ARCH[form]}, width {width:g})")


def _template(base: int, in_channels: int, num_classes: int, input_size, where: str) -> Model:
    """Phase 4, fourth step (keys and shapes already match): the builder graph to fill."""
    try:
        return sttn_resnet18(width=base / 64, num_classes=num_classes, input_size=input_size,
                             in_channels=in_channels, stem="imagenet", blocks=8, seed=0)
    except ModelError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def _checked_value(value: np.ndarray, official_key: str, where: str) -> np.ndarray:
    """One checkpoint tensor (its shape already checked), checked: floating dtype (float16
    widened to float32; bfloat16 arrives as float32 from the reader), finite."""
    if value.dtype.kind != "f":
        raise CheckpointError(f"{where}: key {official_key!r} has dtype {value.dtype}, expected floating point")
    if value.dtype.itemsize < 4:
        value = value.astype(np.float32)
    bad = ~np.isfinite(value)
    if bad.any():
        raise CheckpointError(f"{where}: key {official_key!r} holds {int(bad.sum())} NaN/Inf value(s)")
    return value


def _mapped_layer(layer: Layer, tensors: dict[str, np.ndarray], form: str, key_of, where: str) -> Layer:
    """Phase 4, last step: the template ``layer`` with the checkpoint's parameters (a merged-form
    ternary layer becomes ``ter_conv`` and its kernel is checked to be ternary)."""
    keys = _official_keys(layer, form)
    if not keys:
        return layer
    kind = "ter_conv" if (layer.kind == "sttn_conv" and form == "ter") else layer.kind
    params: dict[str, np.ndarray] = {}
    for k, p in keys.items():
        if k in tensors:
            params[p] = _checked_value(tensors[k], key_of(k), where)
    if kind == "ter_conv":
        try:
            recover_merged_ternary(params["weight"], name=f"{where}: key {key_of(f'{layer.name}.weight')!r}")
        except QuantizationError as exc:
            raise CheckpointError(str(exc)) from None
    if layer.kind == "batchnorm" and np.any(params["running_var"] < 0):
        raise CheckpointError(f"{where}: key {key_of(layer.name + '.running_var')!r} holds negative variances")
    attrs = dict(layer.attrs)
    if kind == "batchnorm":
        attrs["eps"] = BN_EPS
    return Layer(layer.name, kind, list(layer.inputs), attrs, params)


def _assembled_model(template: Model, layers: list[Layer], form: str, meta: dict[str, Any], where: str) -> Model:
    """Phase 5: the Model (the template's structure, checked by Model) with the
    template's metadata (less its seed) and what was learned on the way."""
    metadata = {k: v for k, v in template.metadata.items() if k != "seed"}
    metadata.update(meta)
    try:
        return Model(template.arch, template.input_shape, layers, _MODEL_FORM[form], metadata)
    except (ModelError, ShapeError) as exc:  # pragma: no cover - the template guarantees the structure
        raise CheckpointError(f"{where}: {exc}") from None


def model_from_official(obj, *, source: str = "<checkpoint>", input_size: int | None = None,
                        strict: bool = True, container: str | None = None) -> Model:
    """Build a Model from an official checkpoint object already read into NumPy.

    ``obj`` is the dict saved by the official code (``{'state_dict', ...}``) or a bare
    state_dict.  Every key of the official layout is required (the stem convolution's
    bias, absent in the official code, is accepted when present).  ``strict=False``
    records unexpected keys and missing biases in the metadata instead of failing
    (other missing keys always fail).  Errors name ``source`` and the key.

    Phases: find the state_dict (:func:`_find_state_dict`), strip the ``module.``
    prefix (:func:`_strip_prefix`), detect the form (:func:`_detect_form`), check the
    keys and shapes against :func:`official_layout` (:func:`_layout_for`,
    :func:`_match_keys`, :func:`_check_shapes`: nothing is built before they match the
    file's tensors), then map them onto the builder graph (:func:`_template`,
    :func:`_mapped_layer`) and assemble the structure (:func:`_assembled_model`).
    """
    where = source
    input_size = DEFAULT_INPUT_SIZE if input_size is None else input_size
    meta: dict[str, Any] = {"source": "official", "source_file": os.path.basename(source)}
    if container:
        meta["container"] = container
    state, arch = _find_state_dict(obj, where, meta)
    tensors, original = _strip_prefix(state, where)
    meta["module_prefix"] = any(short != key for short, key in original.items())

    form, form_from = _detect_form(tensors, arch, where)
    meta.update(official_arch=_FORM_ARCH[form], official_form=form, form_detected_from=form_from)

    def key_of(k):
        return original.get(k, k)

    layout, base, in_channels, num_classes = _layout_for(tensors, form, key_of, where)
    width = base / 64
    layout_text = (f"the official {_FORM_ARCH[form]} layout (width {width:g} = {base} stem channels, "
                   f"{num_classes} classes)")
    _match_keys(tensors, layout, strict=strict, key_of=key_of, where=where, meta=meta, layout_text=layout_text)
    _check_shapes(tensors, layout, form, key_of, where, width)
    template = _template(base, in_channels, num_classes, input_size, where)  # only now: sizes match the file
    layers = [_mapped_layer(layer, tensors, form, key_of, where) for layer in template.layers]
    return _assembled_model(template, layers, form, meta, where)


def load_official(path, *, input_size: int | None = None, strict: bool = True) -> Model:
    """Read an official STTN checkpoint (zip or legacy PyTorch file) into a Model, safely.

    See :mod:`sttn_sim.io.torch_reader` for the reader and :func:`model_from_official` for
    the mapping.  ``input_size`` defaults to 224.
    """
    tf = read_torch_file(path)
    model = model_from_official(tf.obj, source=tf.path, input_size=input_size, strict=strict,
                                container=tf.container)
    model.metadata["devices"] = list(tf.devices)
    if tf.version is not None:
        model.metadata["container_version"] = tf.version
    if tf.archive_name is not None:
        model.metadata["archive_name"] = tf.archive_name
    return model


# --------------------------------------------------------------------------------------
# writing


def _check_official_structure(model: Model) -> Model:
    """The sttn_resnet18 template this model must match (names and kinds)."""
    if not isinstance(model, Model):
        raise ModelError(f"save_official() expects a sttn_sim Model, got {type(model).__name__}")
    if model.form not in ("latent", "merged"):
        raise ModelError(f"save_official() needs a latent or merged model, got form {model.form!r} "
                         f"(a folded model has lost its BatchNorm layers)")
    try:
        stem = model["features.0"].params["weight"]
        fc = model["fc"].params["weight"]
    except (ModelError, KeyError):
        raise ModelError("save_official(): the model is not the official STTN ResNet-18 "
                         "(no 'features.0' / 'fc' layers)") from None
    if len(model.input_shape) != 3 or stem.ndim != 4 or stem.shape[2:] != (7, 7) or fc.ndim != 2:
        raise ModelError("save_official(): the model is not the official STTN ResNet-18 (it needs an image input, "
                         "a conv7x7 stem 'features.0' and a linear 'fc')")
    try:
        template = sttn_resnet18(width=stem.shape[0] / 64, num_classes=fc.shape[0], input_size=model.input_shape[1],
                                 in_channels=stem.shape[1], stem="imagenet", blocks=8, seed=0)
    except ModelError as exc:
        raise ModelError(f"save_official(): the model is not the official STTN ResNet-18 ({exc})") from None
    ours = [(l.name, l.kind if l.kind not in ("ter_conv",) else "sttn_conv") for l in model.layers]
    theirs = [(l.name, l.kind) for l in template.layers]
    if ours != theirs:
        diff = next(((a, b) for a, b in zip(ours, theirs) if a != b), (ours[len(theirs):][:1], theirs[len(ours):][:1]))
        raise ModelError(f"save_official(): the model is not the official STTN ResNet-18 layout "
                         f"(first difference: {diff[0]} versus {diff[1]})")
    return template


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def official_state_dict(model: Model, form: str = "bwx2", *, module_prefix: bool = True) -> "OrderedDict[str, np.ndarray]":
    """The official state_dict (float32 NumPy arrays, int64 ``num_batches_tracked``).

    ``form="bwx2"`` needs two latent kernels per ternary layer; from a merged model
    they are synthesised as ``W1 = α·s1``, ``W2 = α·s2`` with signs such that
    ``s1 + s2 = B1 + B2`` (every |W| = α, so the official α and the forward are
    unchanged; the training state is of course not recovered), with ``b1 = bias`` and
    ``b2 = 0``.  ``form="ter"`` stores ``α(B1+B2)`` (float32) and ``b1 + b2``.
    Missing biases are written as zeros (the official convolutions have biases).
    """
    if form not in _FORM_ARCH:
        raise ModelError(f"form={form!r}: expected 'bwx2' (training form) or 'ter' (merged form)")
    _check_official_structure(model)
    prefix = "module." if module_prefix else ""
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for layer in model.layers:
        n, p = layer.name, layer.params
        if layer.kind in ("conv", "linear"):
            out[f"{prefix}{n}.weight"] = _f32(p["weight"])
            if "bias" in p:
                out[f"{prefix}{n}.bias"] = _f32(p["bias"])
        elif layer.kind == "batchnorm":
            for key in ("weight", "bias", "running_mean", "running_var"):
                out[f"{prefix}{n}.{key}"] = _f32(p[key])
            out[f"{prefix}{n}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        elif layer.kind == "prelu":
            out[f"{prefix}{n}.weight"] = _f32(p["weight"])
        elif layer.kind in ("sttn_conv", "ter_conv"):
            c_out = (p.get("weight1") if layer.kind == "sttn_conv" else p["weight"]).shape[0]
            zeros = np.zeros(c_out)
            if layer.kind == "sttn_conv":
                b1 = np.asarray(p.get("bias1", zeros), np.float64)
                b2 = np.asarray(p.get("bias2", zeros), np.float64)
            else:
                b1, b2 = np.asarray(p.get("bias", zeros), np.float64), zeros
            if form == "ter":
                if layer.kind == "sttn_conv":
                    try:
                        q = sttn_ternarize(p["weight1"], p["weight2"], name=f"layer {n!r}")
                    except QuantizationError as exc:
                        raise ModelError(str(exc)) from None
                    shape = (-1,) + (1,) * (q.codes.ndim - 1)
                    merged = (np.asarray(q.scale, np.float64) / 2).reshape(shape) * (2 * q.codes.astype(np.float64))
                else:
                    merged = np.asarray(p["weight"], np.float64)
                out[f"{prefix}{n}.weight"] = _f32(merged)
                out[f"{prefix}{n}.bias"] = _f32(b1 + b2)
            else:
                if layer.kind == "sttn_conv":
                    w1, w2 = _f32(p["weight1"]), _f32(p["weight2"])
                else:
                    try:
                        q = recover_merged_ternary(p["weight"], name=f"layer {n!r}")
                    except QuantizationError as exc:
                        raise ModelError(str(exc)) from None
                    alpha = (np.asarray(q.scale, np.float64) / 2).reshape((-1,) + (1,) * (q.codes.ndim - 1))
                    if np.any(alpha > 1):
                        raise ModelError(f"layer {n!r}: α > 1 cannot come from latent weights clamped to [-1, 1]")
                    codes = q.codes.astype(np.float64)
                    s1 = np.where(codes < 0, -1.0, 1.0)           # t=+1: (+,+), t=0: (+,-), t=-1: (-,-)
                    s2 = np.where(codes > 0, 1.0, -1.0)
                    alpha = np.where(alpha > 0, alpha, 0.5)       # an all-zero channel: any α, codes give 0
                    w1, w2 = _f32(alpha * s1), _f32(alpha * s2)
                out[f"{prefix}{n}_1.weight"] = w1
                out[f"{prefix}{n}_1.bias"] = _f32(b1)
                out[f"{prefix}{n}_2.weight"] = w2
                out[f"{prefix}{n}_2.bias"] = _f32(b2)
    return out


def save_official(model: Model, path, form: str = "bwx2", *, module_prefix: bool = True, epoch: int = 0,
                  best_prec1: float | None = None, archive_name: str = "archive") -> str:
    """Write ``model`` as an official STTN checkpoint (PyTorch zip archive); atomic.

    ``form="bwx2"``: ``{'epoch', 'arch': 'resnet18_bwx2', 'state_dict', 'best_prec1'}``
    (no optimizer state); ``form="ter"``: ``{'state_dict'}`` as the official merge
    script saves it.  The file opens with ``torch.load(path, weights_only=True)`` and
    loads strictly into the official model (keys with the ``module.`` prefix unless
    ``module_prefix=False``).
    """
    state = official_state_dict(model, form, module_prefix=module_prefix)
    if form == "bwx2":
        best = best_prec1 if best_prec1 is not None else model.metadata.get("best_prec1", 0.0)
        obj: dict[str, Any] = {"epoch": int(epoch), "arch": _FORM_ARCH[form], "state_dict": state,
                               "best_prec1": float(best)}
    else:
        obj = {"state_dict": state}
    return write_torch_zip(path, obj, archive_name=archive_name)
