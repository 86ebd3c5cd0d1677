"""The registry of named models: the configuration files shipped with the package.

Named configurations are YAML files of ``decloud/models/configs/`` (the repository's
top-level ``models/`` folder links there), shipped as package data and read with
:mod:`importlib.resources`, so an installed package finds them as an editable checkout
does. Any other file can be given by path. :func:`get_config` resolves a name or a
path.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from decloud.models.config import ModelConfig, ModelConfigError, load_config

__all__ = ["MODELS_DIR", "get_config", "list_configs"]

#: The shipped model configurations (package data of ``decloud.models``).
MODELS_DIR: Traversable = resources.files("decloud.models").joinpath("configs")


def _load(resource: Traversable) -> ModelConfig:
    # A real file for load_config (the resource itself when the package is on disk).
    with resources.as_file(resource) as path:
        return load_config(path)


def _yaml_files(folder: Traversable) -> list[Traversable]:
    return [r for r in folder.iterdir() if r.is_file() and r.name.endswith(".yaml")]


def list_configs(folder: Traversable = MODELS_DIR) -> list[ModelConfig]:
    """Every configuration of a folder, by name.

    Args:
        folder: The folder of ``*.yaml`` configurations (a path or a package
            resource); the shipped ones by default.

    Raises:
        ModelConfigError: The folder does not exist, or a configuration is invalid.
    """
    if not folder.is_dir():
        raise ModelConfigError("no model configurations folder", path=Path(str(folder)))
    return sorted((_load(r) for r in _yaml_files(folder)), key=lambda c: c.name)


def get_config(name_or_path: str | Path, folder: Traversable = MODELS_DIR) -> ModelConfig:
    """The configuration of a registered name, or of a YAML file.

    Args:
        name_or_path: A configuration name of ``folder`` (``msop_small``) or the path of
            a ``.yaml``/``.yml`` file.
        folder: Where names are looked up; the shipped configurations by default.

    Raises:
        ModelConfigError: The name is not registered (the message lists those that are),
            or the configuration is invalid.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_config(path)
    candidate = folder.joinpath(f"{name_or_path}.yaml")
    if candidate.is_file():
        return _load(candidate)
    names = ", ".join(c.name for c in list_configs(folder)) if folder.is_dir() else "none"
    raise ModelConfigError(f"unknown model {name_or_path!r} (registered: {names})",
                           field="model")
