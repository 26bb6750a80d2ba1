"""Model files: the project's own format, official STTN PyTorch checkpoints, atomic writes.

Layers, bottom up (each module imports only those below it):

* :mod:`~sttn_sim.io.atomic` — the one atomic writer (temporary file beside the target,
  fsync, rename; symlinks followed, permission bits kept) and output folders;
* :mod:`~sttn_sim.io.own_format` — the project's safetensors model format
  (:func:`save_model`), on the ``safetensors`` package;
* :mod:`~sttn_sim.io.torch_reader` / :mod:`~sttn_sim.io.torch_writer` — PyTorch
  checkpoint files (zip and legacy) read without unpickling anything, and written;
* :mod:`~sttn_sim.io.official` — official STTN state_dict keys ↔ the builder graph
  (:func:`load_official`, :func:`save_official`);
* :mod:`~sttn_sim.io.onnx_export` / :mod:`~sttn_sim.io.qonnx_export` /
  :mod:`~sttn_sim.io.qonnx_import` — ONNX (standard operators) and QONNX (FINN dialect)
  writers, and the QONNX reader (the ``onnx`` package is imported only there, on use);
* this module — :func:`load_checkpoint`, which picks the reader by the file's content
  (:func:`sniff_format`), never by its name.
"""

from __future__ import annotations

from ..errors import CheckpointError
from ..graph import Model
from .official import load_official, save_official
from .own_format import load_own_format, save_model
from .qonnx_import import load_qonnx, looks_like_onnx

__all__ = ["load_checkpoint", "load_official", "load_qonnx", "save_model", "save_official", "sniff_format"]


def sniff_format(path) -> str:
    """Identify a checkpoint by its first bytes (never by its name): ``"safetensors"``,
    ``"pytorch-zip"``, ``"pytorch-legacy"`` (a pickle stream, protocol 2-5),
    ``"pytorch-tar"`` (the very old tar-based PyTorch format), ``"onnx"`` (a serialized
    ONNX ModelProto) or ``"unknown"``."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head.startswith(b"PK\x03\x04"):
        return "pytorch-zip"
    # safetensors before pickle: an 8-byte header length may itself start with 0x80 0x02
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pytorch-legacy"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "pytorch-tar"
    if looks_like_onnx(head):
        return "onnx"
    return "unknown"


def load_checkpoint(path, *, input_size: int | None = None) -> Model:
    """Load a model from ``path``, choosing the reader by the file's content (not its name).

    * the project's own safetensors format (:func:`~sttn_sim.io.own_format.load_own_format`);
    * official STTN PyTorch checkpoints, zip archive or legacy pickle stream, in the
      training form (``resnet18_bwx2`` → a latent model) or the merged form
      (``resnet18_ter`` → a merged model), read by the restricted reader of
      :mod:`sttn_sim.io.torch_reader` (nothing in the file is ever executed) and mapped
      by :func:`~sttn_sim.io.official.load_official`.  ``input_size`` (official files
      only; default 224) sets the model's input resolution, which the checkpoint does
      not record;
    * QONNX ternary models (``.onnx``, e.g. Brevitas exports), parsed with the ``onnx``
      package (the ``interop`` extra) and mapped by :func:`~sttn_sim.io.qonnx_import.load_qonnx`
      to a merged model.
    """
    kind = sniff_format(path)
    if kind == "safetensors":
        return load_own_format(path)
    if kind in ("pytorch-zip", "pytorch-legacy"):
        return load_official(path, input_size=input_size)
    if kind == "onnx":
        return load_qonnx(path)
    if kind == "pytorch-tar":
        raise CheckpointError(
            f"{path}: PyTorch checkpoint (pytorch-tar): the very old tar-based PyTorch format is not supported; "
            f"re-save it with a current PyTorch (torch.save) first. Nothing was unpickled.")
    raise CheckpointError(f"{path}: not a recognised checkpoint (neither safetensors, a PyTorch archive nor ONNX)")
