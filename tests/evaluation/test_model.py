"""sttn_sim.evaluation.model: a spec names one file as the client saw it; loaded once per process."""

import os

import numpy as np
import pytest

from sttn_sim import save_model, synthetic_model
from sttn_sim.errors import CheckpointError
from sttn_sim.evaluation import ModelSpec, loaded_model


def test_loaded_once_and_folded(tmp_path):
    model = synthetic_model("plain_ternary_cnn", seed=0)
    save_model(model, tmp_path / "m.safetensors")
    spec = ModelSpec.of(tmp_path / "m.safetensors")
    assert spec.checkpoint == str((tmp_path / "m.safetensors").resolve()) and spec.size > 0
    a = loaded_model(spec)
    assert loaded_model(ModelSpec.of(tmp_path / "m.safetensors")) is a  # the same file: the cached load
    assert a.model.form == "latent" and a.folded.form == "folded" and a.engine.model is a.folded
    x = np.zeros((1, *model.input_shape), np.float32)
    assert a.engine.run(x).shape == (1, 10)


def test_missing_or_changed_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: no such checkpoint file"):
        ModelSpec.of(tmp_path / "nope.safetensors")
    path = tmp_path / "m.safetensors"
    save_model(synthetic_model("ternary_mlp", seed=0), path)
    spec = ModelSpec.of(path)
    save_model(synthetic_model("ternary_mlp", seed=1), path)  # another model under the same name
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, spec.mtime_ns + 1))
    with pytest.raises(CheckpointError, match="not the one the evaluation started with"):
        loaded_model(spec)
    os.remove(path)
    with pytest.raises(CheckpointError, match="every Dask worker must see the same path"):
        loaded_model(spec)
    assert ModelSpec.of(None).name == "the embedded default model"
