"""ZoeDepth in plain torch (no timm, torchvision or ROS): build, load and run the official models."""

from .config import PRESETS, ZOED_K, ZOED_N, ZOED_NK, ZoeDepthConfig, tiny_config
from .layouts import LayoutError, detect_variant, official_state_dict
from .loading import CheckpointError, load, read_checkpoint
from .precision import PRECISIONS, precision_of, set_precision
from .zoedepth import ForwardOutput, InferenceResult, ZoeDepth

__all__ = [
    "PRECISIONS",
    "PRESETS",
    "ZOED_K",
    "ZOED_N",
    "ZOED_NK",
    "CheckpointError",
    "ForwardOutput",
    "InferenceResult",
    "LayoutError",
    "ZoeDepth",
    "ZoeDepthConfig",
    "detect_variant",
    "load",
    "official_state_dict",
    "precision_of",
    "read_checkpoint",
    "set_precision",
    "tiny_config",
]
