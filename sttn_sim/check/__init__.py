"""Bit-exactness checks (the library side of ``sttn verify``).

* :mod:`.fold_check` — :func:`verify_model`: is the folded model the model that was
  trained?  Layer-local, float64/int64 on both sides.
* :mod:`.engine_check` — :func:`check_engine`: does the packed engine compute what the
  float64/int64 reference computes on the folded model?
* :mod:`.report` — helpers both use (first failing position, tables).

Neither check imports the other; :func:`verify_model` takes an engine report from
:func:`check_engine` when asked to.
"""

from .engine_check import EngineReport, check_engine
from .fold_check import FLOAT_TOL, LOGITS_TOL, TIE_EPS, Divergence, VerifyReport, verify_model

__all__ = ["verify_model", "VerifyReport", "Divergence", "check_engine", "EngineReport", "FLOAT_TOL", "LOGITS_TOL",
           "TIE_EPS"]
