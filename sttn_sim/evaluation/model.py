"""What an evaluation runs: a checkpoint named by path (or the embedded default
model), loaded once per process.

A :class:`ModelSpec` is small and picklable, so it travels to Dask workers instead of
the model: each worker loads the file itself (it must see the same path) the first
time a shard asks for it, and keeps the folded model and its :class:`~sttn_sim.engine.Engine`
(prepacked weights) for every later shard (:func:`loaded_model`, cached per process
by spec).  The spec records the file's size and modification time as the client saw
them; a worker whose file differs refuses it, naming the file, rather than evaluating
another model.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from ..datasets import default_model
from ..engine import Engine
from ..errors import CheckpointError
from ..fold import fold
from ..graph import Model
from ..io import load_checkpoint

__all__ = ["ModelSpec", "LoadedModel", "loaded_model"]


@dataclass(frozen=True)
class ModelSpec:
    """``checkpoint``: an absolute path, or None for :func:`sttn_sim.default_model`;
    ``input_size``: for official PyTorch checkpoints (they do not record it);
    ``size``/``mtime_ns``: the file as the client saw it (None for the default model)."""

    checkpoint: str | None = None
    input_size: int | None = None
    size: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, checkpoint=None, input_size: int | None = None) -> "ModelSpec":
        """The spec of ``checkpoint`` (a path; None: the embedded default model)."""
        if checkpoint is None:
            return cls(None, input_size)
        path = Path(os.path.expanduser(str(checkpoint))).resolve()
        try:
            st = path.stat()
        except FileNotFoundError:
            raise CheckpointError(f"{checkpoint}: no such checkpoint file") from None
        except OSError as exc:
            raise CheckpointError(f"{checkpoint}: cannot read the checkpoint ({exc.strerror or exc})") from None
        return cls(str(path), input_size, st.st_size, st.st_mtime_ns)

    @property
    def name(self) -> str:
        return "the embedded default model" if self.checkpoint is None else Path(self.checkpoint).name

    def check_file(self) -> None:
        """Refuse a checkpoint that is not the file the spec was made from."""
        if self.checkpoint is None:
            return
        try:
            st = os.stat(self.checkpoint)
        except OSError as exc:
            raise CheckpointError(f"{self.checkpoint}: cannot read the checkpoint here "
                                  f"({exc.strerror or exc}); every Dask worker must see the same path") from None
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            raise CheckpointError(f"{self.checkpoint}: this file (size {st.st_size}, mtime_ns {st.st_mtime_ns}) is "
                                  f"not the one the evaluation started with (size {self.size}, mtime_ns "
                                  f"{self.mtime_ns})")


@dataclass(frozen=True)
class LoadedModel:
    """The model as loaded (any form), its folded form and an engine for it."""

    model: Model
    folded: Model
    engine: Engine


@functools.lru_cache(maxsize=2)
def loaded_model(spec: ModelSpec) -> LoadedModel:
    """Load, fold and prepare ``spec`` once per process (later calls return the same object)."""
    spec.check_file()
    if spec.checkpoint is None:
        model = default_model()
    else:
        model = load_checkpoint(spec.checkpoint, input_size=spec.input_size)
    folded = model if model.form == "folded" else fold(model)
    return LoadedModel(model, folded, Engine(folded))
