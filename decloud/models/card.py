"""Model cards: what a trained model takes and gives, how it was made, how well it does.

A card (``model_card.json``, next to the ``model.keras`` it describes) records:

* the model: name, architecture, configuration, parameter count, receptive field and
  size multiple (inputs must be a multiple of it);
* its inputs and outputs: the dataset key each one reads (the model's input names *are*
  dataset keys), bands, resolution, and the scaling the model applies inside
  (:data:`decloud.models.normalization.NORMALISATION`), so that inference feeds it
  the same raw encodings;
* its training data: dataset folder, layout, seeds, sample counts per split, patch size;
* its training settings, metrics per validation split and a learning-curve summary;
* the software it was made with (decloud, keras and its backend, numpy) and the date.

:func:`load_model` reads a model back with its card.
"""

from __future__ import annotations

import json
import math
import platform
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from decloud._version import __version__
from decloud.errors import ModelCardError
from decloud.keys import KeyKind, parse_key
from decloud.models.config import ModelConfig
from decloud.models.normalization import NORMALISATION
from decloud.models.zoo import InputSpec, ModelSpec
from decloud.writers import atomic_file

__all__ = ["CARD_FILE", "CARD_VERSION", "ModelCardError", "card_spec", "load_model",
           "model_card", "read_keras", "write_card"]

#: The card's file name, next to the model.
CARD_FILE = "model_card.json"
#: Version of the card's layout.
CARD_VERSION = 1


def _io(specs: Mapping[str, InputSpec], *, inputs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, spec in specs.items():
        entry: dict[str, Any] = {
            "dataset_key": key, "channels": spec.channels, "bands": list(spec.bands),
            "resolution_m": spec.resolution or None}
        kind = parse_key(key).kind
        if kind is KeyKind.DT:
            entry["dataset_key"] = f"{key} (derived: days from the reference acquisition)"
            entry["scaling"] = None
        elif not inputs:
            entry["scaling"] = "reflectance x 10000 (float32), as the s2_* dataset keys"
        elif kind in NORMALISATION:
            scale, nodata = NORMALISATION[kind]
            entry["scaling"] = {"normalised": f"raw x {scale:.10g}", "scale": scale,
                                "nodata": nodata, "nodata_becomes": 0.0}
        out[key] = entry
    return out


def _finite(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def _history_summary(history: Mapping[str, list[float]]) -> dict[str, Any]:
    epochs = len(history.get("epoch", []))
    out: dict[str, Any] = {"epochs": epochs}
    for key in ("loss", "val_loss"):
        values = history.get(key)
        if values:
            out[key] = {"first": values[0], "last": values[-1], "min": min(values)}
    out["curve"] = {k: list(v) for k, v in history.items()}
    return out


def model_card(
    spec: ModelSpec,
    config: ModelConfig,
    *,
    dataset_manifest: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    seed: int | None = None,
    history: Mapping[str, list[float]] | None = None,
    dataset_path: str | Path | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The card of a model, as a JSON-ready dict.

    Args:
        spec: The built model's spec (:func:`~decloud.models.zoo.build`).
        config: Its configuration.
        dataset_manifest: The training dataset's manifest, if trained.
        metrics: Metrics, by validation split (or flat).
        seed: The training seed.
        history: The learning curve (lists by logged quantity).
        dataset_path: The training dataset's folder.
        training: Training settings (epochs, batch size, learning rate, loss...).
    """
    card: dict[str, Any] = {
        "card_version": CARD_VERSION,
        "name": spec.name,
        "description": config.description,
        "architecture": config.network.kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "inputs": _io(spec.inputs, inputs=True),
        "outputs": _io(spec.outputs, inputs=False),
        "receptive_field_px": spec.receptive_field,
        "size_multiple": spec.size_multiple,
        "margin_px": spec.margin,  # the halo of a seamless tiled run (ModelSpec.margin)
        "params": spec.params,
        "config": config.model_dump(mode="json"),
        "config_source": config.source,
        "training": None,
        "metrics": _finite(dict(metrics)) if metrics is not None else None,
        "software": {
            "decloud": __version__, "keras": keras.__version__,
            "backend": keras.backend.backend(), "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    if dataset_manifest is not None or training is not None or seed is not None:
        data: dict[str, Any] = {"seed": seed, **(dict(training) if training else {})}
        if dataset_path is not None:
            data["dataset"] = str(Path(dataset_path).resolve())
        if dataset_manifest is not None:
            m = dataset_manifest
            data.update({
                "layout": (m.get("layout") or {}).get("name"),
                "dataset_seed": m.get("seed"), "sampler": m.get("sampler"),
                "patch_size": m.get("patch_size"), "tiles": list(m.get("tiles", {})),
                "samples": {s: v.get("samples") for s, v in m.get("splits", {}).items()},
                "dataset_created": m.get("created"),
                "dataset_fingerprint": m.get("plan_fingerprint"),
            })
        if history:
            data["history"] = _history_summary(history)
        card["training"] = _finite(data)
    return card


def write_card(path: str | Path, card: Mapping[str, Any]) -> Path:
    """Write a card as JSON, atomically (replacing an existing one).

    Raises:
        OutputWriteError: Writing failed (nothing is left behind).
    """
    path = Path(path)
    with atomic_file(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(_finite(dict(card)), indent=1))
    return path


def load_model(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """A saved model and its card (``model_card.json`` next to it).

    Args:
        path: The ``.keras`` file, or the folder holding ``model.keras``.

    Returns:
        The model (not compiled: for inference and evaluation) and its card.

    Raises:
        ModelCardError: No such model, no card next to it, or either is unreadable.
    """
    # The custom layers, losses and metrics register themselves on import.
    from decloud.models import losses, metrics, normalization, zoo  # noqa: F401

    path = Path(path)
    if path.is_dir():
        path = path / "model.keras"
    if not path.is_file():
        raise ModelCardError("no such model file", path=path)
    card_path = path.parent / CARD_FILE
    try:
        card: dict[str, Any] = json.loads(card_path.read_text())
    except FileNotFoundError as err:
        raise ModelCardError(f"no {CARD_FILE} next to the model", path=card_path) from err
    except (OSError, ValueError) as err:
        raise ModelCardError(f"unreadable model card ({err})", path=card_path) from err
    return read_keras(path), card


def read_keras(path: str | Path) -> keras.Model:
    """A ``.keras`` file's model, not compiled.

    Keras reports a truncated or foreign file as "File not found"; this says what it
    is instead.

    Raises:
        ModelCardError: The file is missing, is not a Keras model file (not a zip
            archive: truncated, or another format), or cannot be loaded.
    """
    # The custom layers, losses and metrics register themselves on import.
    from decloud.models import losses, metrics, normalization, zoo  # noqa: F401

    path = Path(path)
    if not path.is_file():
        raise ModelCardError("no such model file", path=path)
    if not zipfile.is_zipfile(path):
        raise ModelCardError(f"not a Keras model file: not a zip archive ({path.stat().st_size} "
                             "bytes; truncated, or another format)", path=path)
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as err:
        raise ModelCardError(f"not a Keras model file, or a damaged one ({err})",
                             path=path) from err


def card_spec(card: Mapping[str, Any]) -> ModelSpec:
    """The spec of a card's model, rebuilt from its configuration.

    Raises:
        ModelCardError: The card's configuration is not a valid model configuration.
    """
    from pydantic import ValidationError

    from decloud.models.zoo import build

    try:
        config = ModelConfig.model_validate(card["config"])
    except (KeyError, ValidationError) as err:
        raise ModelCardError(f"the card has no valid model configuration ({err})",
                             field="config") from err
    return build(config)[1]
