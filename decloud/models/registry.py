"""The registry of named models: the configuration files of ``models/``.

Named configurations live as YAML files in the repository's ``models/`` folder; any
other file can be given by path. :func:`get_config` resolves a name or a path.
"""

from __future__ import annotations

from pathlib import Path

from decloud.models.config import ModelConfig, ModelConfigError, load_config

__all__ = ["MODELS_DIR", "get_config", "list_configs"]

#: The repository's model configurations (an editable install finds them here).
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def list_configs(folder: Path = MODELS_DIR) -> list[ModelConfig]:
    """Every configuration of a folder, by name."""
    if not folder.is_dir():
        raise ModelConfigError("no model configurations folder", path=folder)
    return sorted((load_config(p) for p in folder.glob("*.yaml")), key=lambda c: c.name)


def get_config(name_or_path: str | Path, folder: Path = MODELS_DIR) -> ModelConfig:
    """The configuration of a registered name, or of a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_config(path)
    candidate = folder / f"{name_or_path}.yaml"
    if candidate.is_file():
        return load_config(candidate)
    names = ", ".join(c.name for c in list_configs(folder)) if folder.is_dir() else "none"
    raise ModelConfigError(f"unknown model {name_or_path!r} (registered: {names})",
                           field="model")
