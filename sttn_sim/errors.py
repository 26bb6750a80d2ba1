"""The toolkit's exception hierarchy.

Every error a user can cause (a bad file, a bad shape, a model that cannot be folded)
is raised as a subclass of :class:`SttnError`, with a message that names the file, key,
layer or argument and says what was expected.  The command-line tools catch
``SttnError`` and print a one-line message with a non-zero exit code.
"""


class SttnError(Exception):
    """Base class of every error raised on purpose by sttn_sim."""


class CheckpointError(SttnError):
    """A file could not be read or written as a checkpoint (names the file and key)."""


class ModelError(SttnError):
    """A model description is inconsistent, or a model name is unknown."""


class ShapeError(SttnError, ValueError):
    """An array has the wrong rank, shape or dtype (names the layer or argument)."""


class QuantizationError(SttnError, ValueError):
    """A tensor cannot be quantized as asked (NaN, bad argument, not ternary)."""


class FoldError(SttnError):
    """A training-time model cannot be folded into integer codes and thresholds."""


class StatisticsUnavailable(SttnError):
    """A statistic cannot be computed from what the model holds (e.g. learned intervals of
    a merged or folded model, which no longer has the latent kernels W1, W2)."""
