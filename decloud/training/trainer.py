"""Training a model of the zoo on a decloud dataset, resumably.

:func:`train` builds the model of a configuration, feeds it a dataset folder's splits
and writes everything into one output folder::

    model.keras         the trained model (best epoch's weights, no optimiser state)
    model_card.json     what it takes and gives, how it was trained, its metrics
    best.keras          the best epoch so far (ModelCheckpoint, with optimiser state)
    history.csv         the learning curve, one row per epoch (``epoch`` counts from 0)
    run.json            the run's settings, checked when the run is resumed
    backup/             weights, optimiser state and epoch of the last finished epoch
    previews/           epoch_NNN.png: cloudy input, prediction and target (validation)
    logs/               TensorBoard logs

Resuming: the backup is kept once training ends, so running :func:`train` again with
the same ``out_dir`` continues from the last finished epoch, after an interruption as
well as after a finished run (with a larger ``epochs``); ``resume=False`` starts over.
The model configuration must be the same as in ``run.json``. An interrupted run that
is resumed learns what an uninterrupted one does: weights, optimiser state and step
count come from the backup, each epoch's order and augmentation from the seed and the
epoch number, and the best value and patience of early stopping and checkpointing from
``history.csv`` (so a run stopped early stays stopped). The learning-rate schedule spans
the ``epochs`` of the current call.

Devices: see :mod:`decloud.training.devices`. Final metrics: each validation split is
evaluated with :func:`decloud.evaluation.evaluate_model` on the kept model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from decloud.datasets.reader import TrainingDataset, load_manifest
from decloud.errors import DatasetError, TrainingError
from decloud.evaluation import check_dataset, evaluate_model
from decloud.models.card import CARD_FILE, model_card, write_card
from decloud.models.config import GapfillConfig, ModelConfig
from decloud.models.losses import get_loss
from decloud.models.metrics import get_metrics
from decloud.models.zoo import build
from decloud.training.callbacks import CsvHistory, ResumableEarlyStopping, SetEpoch, SplitValidation
from decloud.training.data import Batches
from decloud.training.devices import accelerators, distribution, precision
from decloud.training.history import backup_epoch, best_epoch, read_history, truncate_history
from decloud.training.options import TrainOptions
from decloud.training.previews import preview_callback
from decloud.writers import atomic_file

__all__ = [
    "BACKUP_DIR",
    "BEST_MODEL",
    "HISTORY_FILE",
    "LOG_DIR",
    "MODEL_CARD",
    "MODEL_FILE",
    "PREVIEW_DIR",
    "RUN_FILE",
    "TrainResult",
    "train",
]

MODEL_FILE = "model.keras"
MODEL_CARD = CARD_FILE
BEST_MODEL = "best.keras"
HISTORY_FILE = "history.csv"
RUN_FILE = "run.json"
BACKUP_DIR = "backup"
PREVIEW_DIR = "previews"
LOG_DIR = "logs"


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured.

    Attributes:
        model_path: ``model.keras``, the best epoch's model.
        card_path: ``model_card.json``.
        history: The learning curve over every run in the folder (``history.csv``): a
            list per logged quantity, one value per epoch, ``epoch`` from 0.
        best_epoch: The epoch whose weights were kept, counted from 1 as Keras prints
            them (None if no epoch ran).
        metrics: Final metrics of the kept model on each validation split, by split.
        out_dir: The output folder.
    """

    model_path: Path
    card_path: Path
    history: dict[str, list[float]]
    best_epoch: int | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    out_dir: Path | None = None


def _check_resumable(out_dir: Path, run: Mapping[str, Any]) -> None:
    """A resumed run must train the same network (its weights are restored)."""
    path = out_dir / RUN_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TrainingError(f"unreadable run settings ({err})", path=path) from err
    if previous.get("model", {}).get("network") != run["model"]["network"] or \
            previous.get("model", {}).get("target") != run["model"]["target"]:
        raise TrainingError(
            f"the folder holds a run of another network (model "
            f"{previous.get('model', {}).get('name')!r}); use another output folder, or "
            "start over (resume=False, --restart)", path=out_dir, field="model")


def _tensorboard_available() -> bool:
    """Keras' TensorBoard callback writes with ``tf.summary``: TensorFlow and TensorBoard."""
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("tensorboard"):
        return True
    warnings.warn("no TensorBoard logs: the tensorboard (and tensorflow) packages are not "
                  "installed", stacklevel=3)
    return False


def _valid_splits(manifest: Mapping[str, Any], train_split: str,
                  asked: Sequence[str] | None, dataset: Path) -> list[str]:
    splits = list(manifest["splits"])
    if train_split not in splits:
        raise DatasetError(f"no split {train_split!r} to train on (splits: "
                           f"{', '.join(splits)})", path=dataset, field="split")
    if asked is None:
        return [s for s in splits if s != train_split and manifest["splits"][s]["samples"]]
    for split in asked:
        if split not in splits:
            raise DatasetError(f"no validation split {split!r} (splits: {', '.join(splits)})",
                               path=dataset, field="split")
    return list(dict.fromkeys(asked))


def _prepare_output(out_dir: Path, run: Mapping[str, Any], start: int, *,
                    resume: bool) -> None:
    """Create the output folder, clear a previous run (not resuming), write ``run.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for folder in (BACKUP_DIR, PREVIEW_DIR, LOG_DIR):
            shutil.rmtree(out_dir / folder, ignore_errors=True)
        for name in (HISTORY_FILE, BEST_MODEL, RUN_FILE):
            (out_dir / name).unlink(missing_ok=True)
    # Rows logged after the backup (an epoch interrupted between the two) are redone.
    truncate_history(out_dir / HISTORY_FILE, start)
    with atomic_file(out_dir / RUN_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(run, indent=1))


def _save_model(model: keras.Model, path: Path) -> Path:
    """Save a ``.keras`` file atomically (the temporary name keeps the suffix)."""
    with atomic_file(path, overwrite=True) as tmp:
        model.save(tmp)
    return path


def train(
    config: ModelConfig,
    dataset: str | Path,
    out_dir: str | Path,
    options: TrainOptions | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train a model configuration on a dataset folder; write the model and its card.

    Args:
        config: The model configuration (:func:`~decloud.models.registry.get_config`).
        dataset: The dataset folder (``decloud dataset create``).
        out_dir: The output folder (layout in the module docstring); a previous run
            there is resumed unless ``options.resume`` is False.
        options: How to train (:class:`TrainOptions`); the configuration's
            ``training`` section fills what it leaves as None.
        callbacks: More Keras callbacks, run after decloud's and before the backup.

    Returns:
        What was written and measured.

    Raises:
        TrainingError: The model has no weights (gap filling), or ``out_dir`` holds a run
            of another network.
        ModelConfigError: Unknown loss name.
        DatasetError: The dataset does not fit the model (keys, bands, patch size) or
            lacks a split.
    """
    options = options or TrainOptions()
    if isinstance(config.network, GapfillConfig):
        raise TrainingError(f"model {config.name!r} (gap filling) has no weights to train; "
                            "evaluate it with decloud.evaluation.evaluate_model",
                            field="model")
    dataset, out_dir = Path(dataset), Path(out_dir)
    settings = config.training
    epochs = int(options.epochs or settings.epochs)
    batch_size = int(options.batch_size or settings.batch_size)
    learning_rate = float(options.learning_rate or settings.learning_rate)
    loss_name = options.loss or settings.loss
    get_loss(loss_name, settings.carl_lambda)  # an unknown name fails before any work
    manifest = load_manifest(dataset)
    splits = _valid_splits(manifest, options.train_split, options.valid_splits, dataset)
    # run.json: what a resumed run is checked against, and the card's training section.
    run = {"model": config.model_dump(mode="json"), "dataset": str(dataset.resolve()),
           "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
           "loss": loss_name, "carl_lambda": settings.carl_lambda, "seed": options.seed,
           "mixed_precision": options.mixed_precision, "train_split": options.train_split,
           "valid_splits": splits, "patience": options.patience,
           "steps_per_epoch": options.steps_per_epoch, "augment": options.augment}

    backup = out_dir / BACKUP_DIR
    history_path = out_dir / HISTORY_FILE
    if options.resume:
        _check_resumable(out_dir, run)
    start = backup_epoch(backup) if options.resume else 0

    devices = accelerators()
    keras.utils.set_random_seed(options.seed)
    cloudy = settings.cloudy
    with precision(options.mixed_precision, devices > 0), distribution(devices) as scope:
        with scope:
            model, spec = build(config)
            check_dataset(spec, manifest, dataset)
            # Checked: only now is the output folder touched.
            _prepare_output(out_dir, run, start, resume=options.resume)
            train_data = Batches(TrainingDataset(dataset, options.train_split), spec,
                                 batch_size, cloudy, shuffle=True, augment=options.augment,
                                 seed=options.seed, epoch=start,
                                 steps=options.steps_per_epoch)
            valid = {s: Batches(TrainingDataset(dataset, s), spec, batch_size, cloudy)
                     for s in splits}
            schedule = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=max(1, epochs * len(train_data)), alpha=0.01)
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate=schedule),
                loss={k: get_loss(loss_name, settings.carl_lambda) for k in spec.outputs},
                metrics={k: get_metrics() for k in spec.outputs})
        monitor = "val_loss" if splits else "loss"
        previous = read_history(history_path)
        best = best_epoch(previous, monitor) if start else None
        last = start - 1
        wait = last - best[1] if best else 0
        stopped = best is not None and wait >= options.patience and last > 0
        all_callbacks: list[keras.callbacks.Callback] = [SetEpoch(train_data)]
        if len(splits) > 1:
            all_callbacks.append(SplitValidation({s: valid[s] for s in splits[1:]}))
        all_callbacks += [
            keras.callbacks.ModelCheckpoint(
                out_dir / BEST_MODEL, monitor=monitor, mode="min", save_best_only=True,
                initial_value_threshold=best[0] if best and (out_dir / BEST_MODEL).is_file()
                else None),
            ResumableEarlyStopping(
                monitor=monitor, mode="min", patience=options.patience,
                restore_best_weights=True, state=(best[0], best[1], wait) if best else None),
            CsvHistory(history_path),
        ]
        if options.tensorboard and _tensorboard_available():
            all_callbacks.append(keras.callbacks.TensorBoard(out_dir / LOG_DIR))
        if options.previews:
            all_callbacks.append(preview_callback(
                out_dir / PREVIEW_DIR, spec, valid[splits[0]] if splits else train_data,
                cloudy))
        all_callbacks += list(callbacks)
        # Last: a backup of epoch n means every record of epoch n is written.
        all_callbacks.append(keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False))
        if start < epochs and not stopped:
            model.fit(train_data, validation_data=valid[splits[0]] if splits else None,
                      epochs=epochs, callbacks=all_callbacks,
                      verbose=1 if options.progress else 0,
                      # Batches are shuffled by their own seeded order: Keras' shuffling
                      # of batch indexes would not be the same after a resume.
                      shuffle=False)

    history = read_history(history_path)
    best = best_epoch(history, monitor)
    # The canonical model: float32 policy, best epoch's weights, no optimiser state.
    final, final_spec = build(config)
    if (out_dir / BEST_MODEL).is_file():
        final.set_weights(keras.saving.load_model(out_dir / BEST_MODEL,
                                                  compile=False).get_weights())
    else:
        final.set_weights(model.get_weights())
    metrics = {s: evaluate_model(final, final_spec, dataset, s, batch_size, cloudy=cloudy)
               for s in splits}
    model_path = _save_model(final, out_dir / MODEL_FILE)
    card = model_card(final_spec, config, dataset_manifest=manifest, dataset_path=dataset,
                      metrics=metrics, seed=options.seed, history=history,
                      training={k: v for k, v in run.items() if k not in ("model", "dataset")}
                      | {"best_epoch": best[1] + 1 if best else None, "monitor": monitor})
    card_path = write_card(out_dir / MODEL_CARD, card)
    return TrainResult(model_path=model_path, card_path=card_path, history=history,
                       best_epoch=best[1] + 1 if best else None, metrics=metrics,
                       out_dir=out_dir)
