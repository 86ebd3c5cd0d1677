"""The model zoo: configurations, builders, normalisation, losses and metrics."""

from decloud.models.config import ModelConfig, ModelConfigError, load_config
from decloud.models.inference import predict
from decloud.models.registry import MODELS_DIR, get_config, list_configs
from decloud.models.zoo import InputSpec, ModelSpec, build

__all__ = [
    "MODELS_DIR",
    "InputSpec",
    "ModelConfig",
    "ModelConfigError",
    "ModelSpec",
    "build",
    "get_config",
    "list_configs",
    "load_config",
    "predict",
]
