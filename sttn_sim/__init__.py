"""sttn_sim: bit-exact simulation and analysis of Soft Threshold Ternary Networks.

Public API (see README.md)::

    import sttn_sim
    model = sttn_sim.synthetic_model("sttn_resnet18", width=0.125, input_size=32, num_classes=10)
    folded = sttn_sim.fold(model)
    logits = sttn_sim.reference_forward(folded, x)        # float64
    report = sttn_sim.verify_model(model, folded)          # bit-exactness report
    sttn_sim.save_model(folded, "model.safetensors"); sttn_sim.load_checkpoint("model.safetensors")
"""

from .builders import MODEL_BUILDERS, build_model, plain_ternary_cnn, sttn_resnet18, ternary_mlp
from .errors import CheckpointError, FoldError, ModelError, QuantizationError, ShapeError, SttnError
from .fold import fold
from .graph import Layer, Model
from .io import load_checkpoint, save_model
from .quantizers import (
    HARD_THRESHOLD_METHODS,
    METHODS,
    Method,
    TernaryActivations,
    TernaryWeights,
    absmean_ternarize,
    all_methods,
    fixed_ternarize,
    get_method,
    hard_threshold,
    optimal_ternarize,
    quantization_error,
    recover_merged_ternary,
    register_method,
    registered_method,
    sparsity_ternarize,
    sttn_equivalent_weight,
    sttn_ternarize,
    ternarize_activations,
    ttq_ternarize,
    twn_ternarize,
)
from .reference import reference_forward, run_reference
from .synthetic import synthetic_input, synthetic_model
from .check import verify_model
from .engine import Engine

__version__ = "0.1.0"

__all__ = [
    "MODEL_BUILDERS", "build_model", "plain_ternary_cnn", "sttn_resnet18", "ternary_mlp",
    "SttnError", "CheckpointError", "FoldError", "ModelError", "QuantizationError", "ShapeError",
    "fold", "Layer", "Model", "load_checkpoint", "save_model",
    "HARD_THRESHOLD_METHODS", "TernaryActivations", "TernaryWeights", "absmean_ternarize", "fixed_ternarize",
    "hard_threshold", "optimal_ternarize", "quantization_error", "recover_merged_ternary", "sparsity_ternarize",
    "sttn_equivalent_weight", "sttn_ternarize", "ternarize_activations", "ttq_ternarize", "twn_ternarize",
    "METHODS", "Method", "all_methods", "get_method", "register_method", "registered_method",
    "reference_forward", "run_reference", "synthetic_input", "synthetic_model", "verify_model", "Engine",
]

# Official STTN PyTorch checkpoints (read safely without PyTorch; written back in PyTorch's format).
from .io import load_official, save_official  # noqa: E402

__all__ += ["load_official", "save_official"]

from .datasets import default_model  # noqa: E402  (the embedded trained default model)

__all__ += ["default_model"]

# ONNX / QONNX (the interop extra: the onnx package is imported only when they run)
from .io.onnx_export import export_onnx  # noqa: E402
from .io.qonnx_export import export_qonnx  # noqa: E402
from .io.qonnx_import import load_qonnx  # noqa: E402

__all__ += ["export_onnx", "export_qonnx", "load_qonnx"]
