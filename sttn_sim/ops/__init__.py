"""Numeric primitives with no knowledge of layers or graphs (numpy, plain arrays).

* :mod:`.reference` — the float64/int64 reference arithmetic: convolution, integer
  convolution and linear map of ternary codes, BatchNorm, max/average pooling.
* :mod:`.gradients` — forward/backward pairs for training (any float dtype), with the
  Numba im2col/col2im of :mod:`._im2col`.

The layer kinds (:mod:`sttn_sim.kinds`) call these; executors call the kinds.
"""
