"""Statistics as tidy pandas DataFrames (one row per layer or layer×channel, a
``layer`` column in model order).  See DESIGN §3 for the definitions."""

from .weights import channel_weight_statistics, layer_ternary_weights, weight_statistics

__all__ = ["weight_statistics", "channel_weight_statistics", "layer_ternary_weights"]
