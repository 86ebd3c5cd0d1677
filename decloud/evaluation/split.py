"""A model over a dataset split: does the dataset fit it, and how well does it do."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decloud.datasets.reader import TrainingDataset
from decloud.errors import DatasetError
from decloud.evaluation.pooled import PooledMetrics, cloud_at
from decloud.keys import KeyKind, make_key, parse_key

if TYPE_CHECKING:
    import keras

    from decloud.models.zoo import ModelSpec

__all__ = ["check_dataset", "evaluate_model", "predict_outputs"]


def check_dataset(spec: ModelSpec, manifest: Mapping[str, Any], dataset: Path) -> None:
    """Check that a dataset has the model's keys, with its bands, at a size it takes.

    ``dt_<acq>`` inputs need no stored key: the dataset derives them from its samples'
    dates for each acquisition of its layout.

    Args:
        spec: The model's spec.
        manifest: The dataset's manifest (:func:`~decloud.datasets.load_manifest`).
        dataset: The dataset folder (named in the errors).

    Raises:
        DatasetError: A key is missing, its bands differ, or the patch size is not a
            multiple of the model's size multiple.
    """
    keys: dict[str, Any] = manifest["keys"]
    layout = manifest.get("resolved_layout") or manifest.get("layout") or {}
    acquisitions = set(layout.get("acquisitions", {}))
    needed = dict(spec.inputs) | dict(spec.outputs)
    for key, io in needed.items():
        parsed = parse_key(key)
        if parsed.kind is KeyKind.DT and parsed.acquisition in acquisitions:
            continue  # derived from the samples' dates
        if key not in keys:
            role = "output" if key in spec.outputs else "input"
            raise DatasetError(f"the model's {role} {key!r} is not in the dataset (keys: "
                               f"{', '.join(keys)})", path=dataset, field=key)
        bands = tuple(keys[key]["bands"])
        if bands != tuple(io.bands):
            raise DatasetError(f"{key}: the dataset has bands {list(bands)}, the model "
                               f"{spec.name!r} takes {list(io.bands)}", path=dataset, field=key)
    size = int(manifest["patch_size"])
    if size % spec.size_multiple:
        raise DatasetError(f"patch size {size} is not a multiple of {spec.size_multiple}, as "
                           f"model {spec.name!r} needs", path=dataset, field="patch_size")


def predict_outputs(model: keras.Model, spec: ModelSpec,
                    x: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs on one batch, by output key, as float32 arrays.

    Args:
        model: The model (inputs and outputs named by dataset keys).
        spec: Its spec (the order of its outputs).
        x: The inputs, by key.
    """
    spec.check_inputs(x)  # a typed ModelInputSizeError rather than the backend's
    predicted = model.predict_on_batch(dict(x))
    if not isinstance(predicted, Mapping):
        values = list(predicted) if isinstance(predicted, list | tuple) else [predicted]
        predicted = dict(zip(spec.outputs, values, strict=True))
    return {key: np.asarray(predicted[key], dtype=np.float32) for key in spec.outputs}


def evaluate_model(model: keras.Model, spec: ModelSpec, dataset: str | Path, split: str,
                   batch_size: int = 8, *, cloudy: str | None = None
                   ) -> dict[str, float | int | None]:
    """Metrics of a model over a whole split (trained models and gap filling alike).

    Predictions are made batch by batch, in the split's order, without augmentation,
    and compared with the targets in every region (all valid pixels, ``masked`` under
    the cloudy input's clouds and shadows, ``clear``) as
    :func:`decloud.models.metrics.evaluate` defines them, pooled over the split
    (:class:`~decloud.evaluation.PooledMetrics`).

    Args:
        model: The model (its inputs and outputs named by dataset keys).
        spec: Its spec (:func:`~decloud.models.zoo.build` or the model card).
        dataset: The dataset folder.
        split: The split to evaluate on.
        batch_size: Samples per prediction batch.
        cloudy: The reconstructed acquisition whose mask defines the regions; the
            configuration's ``training.cloudy`` by default.

    Returns:
        ``{metric: value}`` for the main output (``s2_<target>``), None for a region
        with no pixels, and each region's pixel count (``pixels``, ``pixels_masked``,
        ``pixels_clear``); other outputs' are prefixed with their key
        (``s2_20m_target_mae``...).

    Raises:
        DatasetError: The dataset does not fit the model, the split is unknown or
            empty, or ``batch_size`` is not positive.
    """
    dataset = Path(dataset)
    if batch_size <= 0:
        raise DatasetError(f"batch size must be positive, not {batch_size}",
                           field="batch_size")
    cloudy = cloudy or spec.config.training.cloudy
    data = TrainingDataset(dataset, split)
    check_dataset(spec, data.manifest, dataset)
    if len(data) == 0:
        raise DatasetError(f"split {split!r} has no samples", path=dataset, field="split")
    mask_key = make_key(KeyKind.S2_MASK, cloudy)
    available = set(data.keys) | set(data.derived_keys)
    keys = list(dict.fromkeys([*spec.inputs, *spec.outputs,
                               *([mask_key] if mask_key in available else [])]))
    pooled = {key: PooledMetrics() for key in spec.outputs}
    for start in range(0, len(data), batch_size):
        raw = data.batch(np.arange(start, min(start + batch_size, len(data))), keys=keys)
        x = {k: np.asarray(raw[k], dtype=np.float32) for k in spec.inputs}
        predicted = predict_outputs(model, spec, x)
        for key in spec.outputs:
            target = raw[key]
            cloud = cloud_at(raw[mask_key], target.shape) if mask_key in raw else None
            pooled[key].add(target, predicted[key], cloud)
    main = make_key(KeyKind.S2, spec.config.target)
    out: dict[str, float | int | None] = {}
    for key, acc in pooled.items():
        prefix = "" if key == main else f"{key}_"
        out.update({f"{prefix}{name}": value for name, value in acc.result().items()})
    return out
