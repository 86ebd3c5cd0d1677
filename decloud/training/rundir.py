"""What a run folder remembers of the run that made it, and which reruns it accepts.

``run.json`` records every setting that shapes the weights: the model configuration
and its checksum, the dataset's fingerprint (its plan's, from the manifest), the loss,
epochs, seed, batch size, learning rate, mixed precision, splits, patience, steps and
augmentation. A rerun into the folder (:func:`decloud.training.train` with
``resume=True``) is checked against it by :func:`check_rerun`:

* the same settings: an interrupted run resumes; a finished one has nothing to train;
* more ``epochs`` only: the run trains further (and says so);
* anything else (another loss, dataset, model, seed..., fewer epochs): refused with a
  :class:`~decloud.errors.RerunError` naming the setting, the folder's value and the
  new one. Nothing in the folder is touched: the record stays true.

Validation splits after the first one are only logged, so they may change; the first
one is monitored (early stopping, the best checkpoint) and may not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decloud.errors import RerunError, TrainingError

__all__ = ["RUN_VERSION", "check_rerun", "config_checksum", "read_run", "run_record"]

#: Version of ``run.json``'s layout (absent in the first one, which had no checksums).
RUN_VERSION = 2

#: Settings a rerun must keep, with the words its refusal uses.
_KEPT = {
    "model_checksum": "model configuration",
    "dataset_fingerprint": "dataset",
    "loss": "loss",
    "carl_lambda": "CARL lambda",
    "seed": "seed",
    "batch_size": "batch size",
    "learning_rate": "learning rate",
    "mixed_precision": "mixed precision",
    "train_split": "train split",
    "monitored_split": "monitored validation split",
    "steps_per_epoch": "steps per epoch",
    "augment": "augmentation",
    "patience": "patience",
}


def config_checksum(model: Mapping[str, Any]) -> str:
    """SHA-256 of a model configuration's canonical JSON (sorted keys)."""
    text = json.dumps(model, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def run_record(*, model: Mapping[str, Any], dataset: Path, manifest: Mapping[str, Any],
               settings: Mapping[str, Any]) -> dict[str, Any]:
    """The content of ``run.json``.

    Args:
        model: The model configuration (``ModelConfig.model_dump(mode="json")``).
        dataset: The dataset folder.
        manifest: Its manifest (the fingerprint is its plan's).
        settings: The training settings (epochs, loss, seed, ``valid_splits``...).
    """
    splits = list(settings.get("valid_splits") or [])
    return {"run_version": RUN_VERSION, "model": dict(model),
            "model_checksum": config_checksum(model),
            "dataset": str(dataset.resolve()),
            "dataset_fingerprint": manifest.get("plan_fingerprint"),
            **dict(settings), "monitored_split": splits[0] if splits else None}


def read_run(path: Path) -> dict[str, Any] | None:
    """``run.json`` of a folder, None if there is none.

    Raises:
        TrainingError: The file exists but cannot be read as JSON.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(f"unreadable run settings ({err})", path=path) from err
    if not isinstance(data, dict):
        raise TrainingError("run settings are not a JSON object", path=path)
    return data


#: A setting the folder's ``run.json`` does not record.
_MISSING = object()


def _previous_value(previous: Mapping[str, Any], key: str) -> Any:
    """A setting of an earlier ``run.json``, derived where its first layout lacked it."""
    if key in previous:
        return previous[key]
    if key == "model_checksum" and isinstance(previous.get("model"), Mapping):
        return config_checksum(previous["model"])
    if key == "monitored_split":
        splits = previous.get("valid_splits") or []
        return splits[0] if splits else None
    return _MISSING


def _same(key: str, old: Any, new: Any) -> bool:
    if old is _MISSING:
        return True  # not recorded by the first layout: nothing to hold the rerun to
    if key == "dataset_fingerprint" and (old is None or new is None):
        return True  # compared by folder instead (see check_rerun)
    if isinstance(old, float | int) and isinstance(new, float | int) \
            and not isinstance(old, bool) and not isinstance(new, bool):
        return float(old) == float(new)
    return bool(old == new)


def check_rerun(out_dir: Path, previous: Mapping[str, Any] | None,
                run: Mapping[str, Any], finished: int) -> str | None:
    """Check a rerun against the folder's ``run.json``; what it will do, in words.

    Args:
        out_dir: The run folder (named in the errors).
        previous: Its ``run.json`` (:func:`read_run`), None for a new folder.
        run: The new run's record (:func:`run_record`).
        finished: Epochs the folder's backup has finished.

    Returns:
        A sentence to tell the user when the rerun trains further than the folder's
        run was set to (more epochs), else None.

    Raises:
        RerunError: A setting differs (the message names it, with both values), or
            fewer epochs are asked for than the folder's run was set to.
    """
    if previous is None:
        return None
    where = out_dir / "run.json"
    for key, words in _KEPT.items():
        old, new = _previous_value(previous, key), run.get(key)
        if not _same(key, old, new):
            if key == "model_checksum":
                old_name = (previous.get("model") or {}).get("name")
                detail = (f"{old_name!r} (checksum {str(old)[:12]}) in the folder, "
                          f"{run['model'].get('name')!r} (checksum {str(new)[:12]}) now")
            elif key == "dataset_fingerprint":
                detail = (f"{previous.get('dataset')} (fingerprint {str(old)[:12]}) in the "
                          f"folder, {run['dataset']} (fingerprint {str(new)[:12]}) now")
            else:
                detail = f"{old!r} in the folder, {new!r} now"
            raise RerunError(
                f"the folder holds a run made with another {words}: {detail}; use another "
                "output folder, the folder's settings, or start over (--restart)",
                path=where, field=key.removesuffix("_checksum").removesuffix("_fingerprint"))
    unfingerprinted = previous.get("dataset_fingerprint") is None \
        or run.get("dataset_fingerprint") is None
    if unfingerprinted and previous.get("dataset") not in (None, run["dataset"]):
        raise RerunError(
            f"the folder holds a run made with another dataset: {previous.get('dataset')} "
            f"in the folder, {run['dataset']} now; use another output folder or start "
            "over (--restart)", path=where, field="dataset")
    old_epochs, new_epochs = int(previous.get("epochs", 0)), int(run["epochs"])
    if new_epochs < old_epochs:
        raise RerunError(
            f"the folder holds a run of {old_epochs} epochs ({finished} finished), not "
            f"{new_epochs}: a run is never shortened; use --epochs {old_epochs} or more, "
            "another output folder, or start over (--restart)", path=where, field="epochs")
    if new_epochs > old_epochs:
        return (f"continuing the run in {out_dir} from epoch {finished} to {new_epochs} "
                f"(epochs: {old_epochs} in the folder, {new_epochs} now)")
    return None
