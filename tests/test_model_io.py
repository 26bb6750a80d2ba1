"""Tests of sttn_sim.model_io: the own safetensors model format and load_checkpoint."""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

import sttn_sim.safetensors_format as stf
from sttn_sim.errors import CheckpointError, ModelError
from sttn_sim.fold import fold
from sttn_sim.graph import Layer, Model
from sttn_sim.model_io import FORMAT_NAME, SCHEMA_VERSION, load_checkpoint, save_model, sniff_format
from sttn_sim.reference import reference_forward
from sttn_sim.safetensors_format import load_tensors, save_tensors
from sttn_sim.synthetic import synthetic_input, synthetic_model

# --------------------------------------------------------------------------- fixtures

BUILDERS = {
    "sttn_resnet18": {"width": 0.125, "input_size": 32, "num_classes": 10},
    "plain_ternary_cnn": {"channels": (8, 16), "input_size": 8},
    "ternary_mlp": {"hidden": (32, 16)},
}


@pytest.fixture(scope="module")
def latent_models() -> dict[str, Model]:
    """Latent models with calibrated (non-trivial) BN, one per builder."""
    return {name: synthetic_model(name, seed=5, **kw) for name, kw in BUILDERS.items()}


@pytest.fixture(scope="module")
def models(latent_models) -> dict[tuple[str, str], Model]:
    out = {}
    for name, m in latent_models.items():
        out[(name, "latent")] = m
        out[(name, "folded")] = fold(m)
    return out


CASES = [(name, form) for name in BUILDERS for form in ("latent", "folded")]


def assert_models_identical(a: Model, b: Model) -> None:
    assert type(b) is Model
    assert b.arch == a.arch
    assert b.form == a.form
    assert b.input_shape == a.input_shape
    assert b.metadata == a.metadata
    assert b.layer_names == a.layer_names
    for la, lb in zip(a.layers, b.layers):
        assert lb.kind == la.kind, la.name
        assert lb.inputs == la.inputs, la.name
        assert lb.attrs == la.attrs, la.name
        assert list(lb.params) == list(la.params), la.name
        for key, va in la.params.items():
            vb = lb.params[key]
            assert isinstance(vb, np.ndarray)
            assert vb.dtype == va.dtype, f"{la.name}.{key}: {vb.dtype} != {va.dtype}"
            assert vb.shape == va.shape, f"{la.name}.{key}"
            assert np.array_equal(vb, va), f"{la.name}.{key}"


def _rewrite(src: Path, dst: Path, *, tensors=None, meta=None, graph=None) -> Path:
    """Copy a saved model, replacing tensors / metadata / the graph dict."""
    t, m = load_tensors(src)
    if tensors is not None:
        t = tensors(t)
    if graph is not None:
        g = graph(json.loads(m["graph"]))
        m = dict(m, graph=g if isinstance(g, str) else json.dumps(g))
    if meta is not None:
        m = meta(dict(m))
    save_tensors(dst, t, m)
    return dst


@pytest.fixture
def saved_mlp(tmp_path, latent_models) -> Path:
    return save_model(latent_models["ternary_mlp"], tmp_path / "mlp.safetensors")


@pytest.fixture
def saved_cnn(tmp_path, latent_models) -> Path:
    return save_model(latent_models["plain_ternary_cnn"], tmp_path / "cnn.safetensors")


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("name, form", CASES)
def test_round_trip_exact(tmp_path, models, name, form):
    model = models[(name, form)]
    path = save_model(model, tmp_path / "m.safetensors")
    assert path == tmp_path / "m.safetensors"
    loaded = load_checkpoint(path)
    assert_models_identical(model, loaded)


def test_folded_models_hold_integer_and_float64_params(models):
    """The round trip is only a strong check if the folded form has varied dtypes."""
    folded = models[("plain_ternary_cnn", "folded")]
    dtypes = {(l.kind, k): v.dtype for l in folded for k, v in l.params.items()}
    assert dtypes[("ternary_conv", "codes")] == np.int8
    assert dtypes[("ternary_conv", "scale")] == np.float64
    assert dtypes[("threshold", "direction")] == np.int8
    assert np.dtype(np.int64) in {v.dtype for l in folded if l.kind == "threshold" for v in l.params.values()}
    assert np.dtype(np.float32) in {v.dtype for l in folded for v in l.params.values()}


@pytest.mark.parametrize("name, form", CASES)
def test_reference_forward_of_loaded_model_is_bit_identical(tmp_path, models, name, form):
    model = models[(name, form)]
    loaded = load_checkpoint(save_model(model, tmp_path / "m.safetensors"))
    x = synthetic_input(model, batch=2, seed=9)
    a = reference_forward(model, x)
    b = reference_forward(loaded, x)
    assert a.dtype == b.dtype == np.float64
    assert np.array_equal(a, b)


def test_file_layout(tmp_path, latent_models):
    model = latent_models["plain_ternary_cnn"]
    path = save_model(model, tmp_path / "m.safetensors")
    tensors, meta = load_tensors(path)
    assert meta["format"] == "sttn_sim" == FORMAT_NAME
    assert meta["schema_version"] == "1" == str(SCHEMA_VERSION)
    assert set(tensors) == {f"{l.name}.{k}" for l in model for k in l.params}
    assert "features.3.weight1" in tensors and "features.3.bias2" in tensors
    graph = json.loads(meta["graph"])
    assert graph["arch"] == "plain_ternary_cnn"
    assert [e["name"] for e in graph["layers"]] == model.layer_names


def test_metadata_argument_is_merged(tmp_path, latent_models):
    model = latent_models["ternary_mlp"]
    before = dict(model.metadata)
    extra = {"dataset": "digits", "accuracy": 0.875, "seed": 123, "tags": ("a", "b"), "np": np.float32(0.5)}
    loaded = load_checkpoint(save_model(model, tmp_path / "m.safetensors", metadata=extra))
    assert model.metadata == before  # the model itself is not changed
    expected = dict(before, dataset="digits", accuracy=0.875, seed=123, tags=["a", "b"], np=0.5)
    assert loaded.metadata == expected
    assert before["seed"] == 5  # overridden by the argument above
    loaded.metadata = dict(before)
    assert_models_identical(model, loaded)  # everything else is unchanged


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}])
def test_unserialisable_metadata_raises_before_writing(tmp_path, latent_models, bad):
    path = tmp_path / "m.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        save_model(latent_models["ternary_mlp"], path, metadata=bad)
    assert os.listdir(tmp_path) == []


def test_save_model_rejects_non_model(tmp_path):
    with pytest.raises(ModelError, match="expects a sttn_sim Model, got dict"):
        save_model({"a": np.zeros(2)}, tmp_path / "m.safetensors")


# --------------------------------------------------------------------------- atomic saving


def test_save_is_atomic_when_a_tensor_fails_mid_write(tmp_path, latent_models):
    path = tmp_path / "m.safetensors"
    save_model(latent_models["plain_ternary_cnn"], path)
    old = path.read_bytes()

    seen_sizes = []

    class Exploding(np.ndarray):
        def astype(self, *args, **kwargs):
            # by now the header and the earlier tensors are in the temporary file
            temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            seen_sizes.extend(p.stat().st_size for p in temps)
            raise RuntimeError("disk on fire")

    other = latent_models["ternary_mlp"].copy()
    other["fc2"].params["weight2"] = other["fc2"].params["weight2"].view(Exploding)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_model(other, path)
    assert len(seen_sizes) == 1 and seen_sizes[0] > 1000, "the failure did not happen mid-write"
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert_models_identical(latent_models["plain_ternary_cnn"], load_checkpoint(path))


def test_save_is_atomic_when_fsync_fails(tmp_path, latent_models, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_model(latent_models["plain_ternary_cnn"], path)
    old = path.read_bytes()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stf.os, "fsync", failing_fsync)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*No space left"):
        save_model(latent_models["ternary_mlp"], path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_save_to_missing_directory(tmp_path, latent_models):
    path = tmp_path / "no" / "such" / "m.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        save_model(latent_models["ternary_mlp"], path)


# --------------------------------------------------------------------------- load errors


@pytest.mark.parametrize("meta", [None, {"format": "pt"}, {"graph": "{}"}])
def test_generic_safetensors_file_is_refused(tmp_path, meta):
    path = tmp_path / "generic.safetensors"
    save_tensors(path, {"weight": np.zeros((2, 3), np.float32)}, meta)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "without sttn_sim metadata" in msg


@pytest.mark.parametrize("version", ["2", "0", "1.0", "", None])
def test_wrong_schema_version(tmp_path, saved_mlp, version):
    def meta(m):
        if version is None:
            del m["schema_version"]
        else:
            m["schema_version"] = version
        return m

    path = _rewrite(saved_mlp, tmp_path / "v.safetensors", meta=meta)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"schema_version {version!r} is not supported" in msg


@pytest.mark.parametrize(
    "graph, expect",
    [
        (lambda g: "{not json", "metadata key 'graph' is not valid JSON"),
        (lambda g: "", "metadata key 'graph' is not valid JSON"),
        (lambda g: [1, 2], "metadata key 'graph' must be a JSON object"),
        (lambda g: {k: v for k, v in g.items() if k != "layers"}, "graph key 'layers' missing"),
        (lambda g: dict(g, arch=3), "graph key 'arch' missing or not a str"),
        (lambda g: dict(g, input_shape="64"), "graph key 'input_shape' missing or not a list"),
        (lambda g: dict(g, layers=[{"name": "x"}]), "graph layer #0 must have name, kind, inputs, attrs and params"),
        (lambda g: dict(g, layers=[]), "unexpected tensors not described by the graph"),
    ],
)
def test_invalid_graph(tmp_path, saved_mlp, graph, expect):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", graph=graph)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expect in str(info.value)


def test_graph_without_layers(tmp_path, saved_mlp):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", tensors=lambda t: {}, graph=lambda g: dict(g, layers=[]))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: model 'ternary_mlp' has no layers")):
        load_checkpoint(path)


def test_graph_missing_from_metadata(tmp_path, saved_mlp):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", meta=lambda m: {k: v for k, v in m.items() if k != "graph"})
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: metadata key 'graph'")):
        load_checkpoint(path)


def _set_layer(layer_name, /, **changes):
    def edit(g):
        for entry in g["layers"]:
            if entry["name"] == layer_name:
                entry.update(changes)
        return g

    return edit


def _drop_attr(name, attr):
    def edit(g):
        for entry in g["layers"]:
            if entry["name"] == name:
                del entry["attrs"][attr]
        return g

    return edit


@pytest.mark.parametrize(
    "edit, expect",
    [
        (_set_layer("fc1", kind="dense"), "layer 'fc1': unknown kind 'dense'"),
        (_set_layer("bn1", inputs=["fc2"]), "layer 'bn1': input 'fc2' is not an earlier layer"),
        (_set_layer("fc1", attrs=[1, 2]), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", inputs="tact0"), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", inputs=5), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", params="weight1"), "graph layer #3 ('fc1')"),
        (_set_layer("fc1", name=7), "graph layer #3 (7)"),
        (lambda g: dict(g, input_shape=["a", 8, 8]), "graph is malformed"),
        (lambda g: dict(g, metadata=[1, 2]), "graph is malformed"),
    ],
)
def test_inconsistent_graph(tmp_path, saved_mlp, edit, expect):
    path = _rewrite(saved_mlp, tmp_path / "g.safetensors", graph=edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert expect in str(info.value)


@pytest.mark.parametrize("layer, attr", [("features.3", "stride"), ("features.6", "padding"), ("avgpool", "kernel")])
def test_graph_missing_layer_attribute(tmp_path, saved_cnn, layer, attr):
    path = _rewrite(saved_cnn, tmp_path / "g.safetensors", graph=_drop_attr(layer, attr))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"layer {layer!r}" in msg and f"attribute {attr!r} must be an integer" in msg


@pytest.mark.parametrize("key, layer", [("fc.bias", "fc"), ("fc1.weight2", "fc1"), ("bn0.running_var", "bn0")])
def test_missing_tensor(tmp_path, saved_mlp, key, layer):
    path = _rewrite(saved_mlp, tmp_path / "t.safetensors", tensors=lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"tensor {key!r} (layer {layer!r}) is missing" in msg


@pytest.mark.parametrize("extra", ["ghost.weight", "fc.running_mean", "fc1.weight3"])
def test_extra_tensor(tmp_path, saved_mlp, extra):
    path = _rewrite(saved_mlp, tmp_path / "t.safetensors", tensors=lambda t: dict(t, **{extra: np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "unexpected tensors" in msg and extra in msg


@pytest.mark.parametrize(
    "key, array, layer",
    [
        ("fc.weight", np.zeros((10, 5), np.float32), "fc"),             # 16 inputs expected
        ("fc2.weight1", np.zeros((16, 31), np.float32), "fc2"),
        ("bn1.weight", np.ones(7, np.float32), "bn1"),                  # 32 channels expected
        ("fc1.weight1", np.zeros((32, 64, 1, 1), np.float32), "fc1"),   # a 4-d kernel in a linear layer
    ],
)
def test_shapes_that_do_not_fit(tmp_path, saved_mlp, key, array, layer):
    path = _rewrite(saved_mlp, tmp_path / "s.safetensors", tensors=lambda t: dict(t, **{key: array}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"layer {layer!r}" in msg


def test_conv_shape_that_does_not_fit(tmp_path, saved_cnn):
    path = _rewrite(saved_cnn, tmp_path / "s.safetensors",
                    tensors=lambda t: dict(t, **{"features.6.weight1": np.full((16, 4, 3, 3), 0.5, np.float32)}))
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*layer 'features.6'.*does not fit"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- PyTorch files: refused, never unpickled


class _Payload:
    """Unpickling this creates ``marker`` (the proof that a pickle ran)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_bytes(marker: Path, protocol: int) -> bytes:
    return pickle.dumps({"state_dict": _Payload(marker)}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_payload_is_live(tmp_path, protocol):
    """Sanity check of the test itself: the payload really runs when unpickled."""
    marker = tmp_path / "ran"
    pickle.loads(_pickle_bytes(marker, protocol))["state_dict"].close()
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_pickle_is_refused_without_unpickling(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth.tar"
    path.write_bytes(_pickle_bytes(marker, protocol))
    assert path.read_bytes()[:2] == bytes([0x80, protocol])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "PyTorch checkpoint" in msg and "pytorch-legacy" in msg
    assert not marker.exists()


def test_zip_checkpoint_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickle_bytes(marker, 2))
        z.writestr("archive/version", "3\n")
    assert path.read_bytes()[:4] == b"PK\x03\x04"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "PyTorch checkpoint" in msg and "pytorch-zip" in msg
    assert not marker.exists()


def test_file_name_does_not_decide_the_reader(tmp_path, latent_models):
    """A safetensors model named .pth loads; a pickle named .safetensors is refused."""
    good = save_model(latent_models["ternary_mlp"], tmp_path / "model.pth")
    assert_models_identical(latent_models["ternary_mlp"], load_checkpoint(good))
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_pickle_bytes(marker, 2))
    with pytest.raises(CheckpointError, match="PyTorch checkpoint"):
        load_checkpoint(bad)
    assert not marker.exists()


# --------------------------------------------------------------------------- sniff_format


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"PK\x03\x04" + b"\x00" * 30, "pytorch-zip"),
        (b"\x80\x02}q\x00.", "pytorch-legacy"),
        (b"\x80\x05\x95", "pytorch-legacy"),
        (b"\x80\x01", "unknown"),   # protocol 1 never starts like this; not a torch file
        (b"\x80\x06", "unknown"),
        (b"\x80", "unknown"),
        (b"", "unknown"),
        (b"hello world, just text", "unknown"),
        (b"PK\x05\x06" + b"\x00" * 18, "unknown"),  # an empty zip is not a checkpoint
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ", "safetensors"),
    ],
)
def test_sniff_format_bytes(tmp_path, content, kind):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    assert sniff_format(path) == kind


def test_sniff_format_real_files(tmp_path, latent_models):
    st = save_model(latent_models["ternary_mlp"], tmp_path / "m.safetensors")
    assert sniff_format(st) == "safetensors"
    z = tmp_path / "z.pth"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("archive/data.pkl", b"x")
    assert sniff_format(z) == "pytorch-zip"


@pytest.mark.parametrize("content", [b"", b"hello", b"\x00" * 64])
def test_unknown_file_is_refused(tmp_path, content):
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: not a recognised checkpoint")):
        load_checkpoint(path)


@pytest.mark.parametrize("func", [load_checkpoint, sniff_format])
def test_directory_and_missing_file(tmp_path, func):
    directory = tmp_path / "adir"
    directory.mkdir()
    with pytest.raises(CheckpointError, match=re.escape(f"{directory}: cannot be read")):
        func(directory)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(f"{missing}: cannot be read")):
        func(missing)
