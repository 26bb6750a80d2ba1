"""Evaluate a checkpoint on an image dataset, in one process or on a Dask cluster.

``evaluate(ModelSpec.of(path), source, ...)`` runs the first ``limit`` images of an
:class:`~sttn_sim.images.ImageSource` through the packed engine and returns an
:class:`Evaluation`: top-1 / top-k per class, the engine's agreement with the float64
reference on a sample of images (:func:`sttn_sim.check.check_engine`), images/s,
skipped images and, with ``RunOptions(record=True)``, the activation statistics of
the whole run (:class:`~sttn_sim.stats.ActivationRecorder`, filled in the engine's
fused threshold kernels).  ``sttn evaluate`` (:mod:`sttn_sim.evaluate`) is its command.

* :mod:`.tally` — :class:`Tally`: the mergeable integer counts; :func:`topk_hits`;
* :mod:`.model` — :class:`ModelSpec` (what a worker loads) and :func:`loaded_model`
  (once per process);
* :mod:`.parts` — :func:`evaluate_part` (one part of a run), shards, options, the
  checked sample;
* :mod:`.run` — :func:`evaluate` (one process, or Dask);
* :mod:`.distributed` — the shards as Dask tasks (imported only for a Dask run:
  ``import sttn_sim`` never imports dask);
* :mod:`.report` — :class:`Evaluation`: text, JSON, ``per_class.csv`` and the other files.

Example::

    from sttn_sim.evaluation import ModelSpec, RunOptions, evaluate
    from sttn_sim.images import open_dataset

    spec = ModelSpec.of("sttn_resnet18.pth.tar", input_size=224)
    val = open_dataset("/data/imagenet/val", labels="/data/val_labels.txt", num_classes=1000,
                       input_shape=(3, 224, 224))
    run = evaluate(spec, val, options=RunOptions(batch_size=32, record=True), workers=2)
    print(run.to_text()); run.write("eval_out", record_dir="eval_out/stats")
"""

from .model import LoadedModel, ModelSpec, loaded_model
from .report import Evaluation, FailedShard
from .parts import (
    DEFAULT_BATCH,
    EvaluationError,
    PartResult,
    RunOptions,
    Shard,
    check_sample,
    evaluate_part,
    plan_shards,
)
from .run import DEFAULT_CHECK, evaluate
from .tally import Tally, topk_hits

__all__ = ["LoadedModel", "ModelSpec", "loaded_model", "Evaluation", "FailedShard", "DEFAULT_BATCH",
           "DEFAULT_CHECK", "EvaluationError", "PartResult", "RunOptions", "Shard", "check_sample", "evaluate",
           "evaluate_part", "plan_shards", "Tally", "topk_hits"]
