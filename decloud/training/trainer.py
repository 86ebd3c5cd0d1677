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
Reruns never rewrite history (:mod:`decloud.training.rundir`): ``run.json`` records
the settings that made the folder's weights (model checksum, dataset fingerprint,
loss, seed, epochs...), a rerun with another one is refused with a
:class:`~decloud.errors.RerunError` naming it (the folder untouched), a rerun with more
epochs only trains further and says so (:attr:`TrainResult.notes`), and a finished run
rerun as it was trains nothing and writes nothing. ``model.keras`` and its card are
written together, so the card always describes the weights next to it; every file
(checkpoints, backup, history, card) is written under a temporary name and renamed:
a full disk fails with an :class:`~decloud.errors.OutputWriteError` naming the file and
"no space left on device", and never leaves a truncated file. An interrupted run that
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
from decloud.errors import DatasetError, ModelCardError, TrainingError
from decloud.evaluation import check_dataset, evaluate_model
from decloud.models.card import CARD_FILE, model_card, read_keras, write_card
from decloud.models.config import GapfillConfig, ModelConfig
from decloud.models.losses import get_loss
from decloud.models.metrics import get_metrics
from decloud.models.zoo import build
from decloud.training.callbacks import (
    AtomicBackup,
    BestCheckpoint,
    CsvHistory,
    ResumableEarlyStopping,
    SetEpoch,
    SplitValidation,
)
from decloud.training.data import Batches
from decloud.training.devices import accelerators, distribution, precision
from decloud.training.history import backup_epoch, best_epoch, read_history, truncate_history
from decloud.training.options import TrainOptions
from decloud.training.previews import preview_callback
from decloud.training.rundir import check_rerun, read_run, run_record
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
        notes: What the call did beyond training as asked, in words: trained a finished
            run further (more epochs), or found it complete and wrote nothing.
    """

    model_path: Path
    card_path: Path
    history: dict[str, list[float]]
    best_epoch: int | None
    metrics: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _stopped(history: Mapping[str, list[float]], monitor: str, start: int,
             patience: int) -> bool:
    """Early stopping ended the run: its patience ran out by the last finished epoch."""
    best = best_epoch(history, monitor) if start else None
    last = start - 1
    return best is not None and last - best[1] >= patience and last > 0


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
        # The card and model go too: they describe the run being discarded.
        for name in (HISTORY_FILE, BEST_MODEL, RUN_FILE, MODEL_CARD, MODEL_FILE):
            (out_dir / name).unlink(missing_ok=True)
    # Rows logged after the backup (an epoch interrupted between the two) are redone.
    truncate_history(out_dir / HISTORY_FILE, start)
    with atomic_file(out_dir / RUN_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(run, indent=1))


def _save_model_and_card(model: keras.Model, out_dir: Path,
                         card: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``model.keras`` and its card together, each atomically.

    Both are complete under temporary names before either is renamed, the model first:
    a failure leaves the previous pair (or no card), never a card of other weights.
    """
    model_path, card_path = out_dir / MODEL_FILE, out_dir / MODEL_CARD
    with atomic_file(card_path, overwrite=True) as card_tmp, \
            atomic_file(model_path, overwrite=True) as model_tmp:
        model.save(model_tmp)
        write_card(card_tmp, card)
    return model_path, card_path


def _complete(out_dir: Path, notes: list[str]) -> TrainResult | None:
    """The result of a finished run in the folder, read back; None if it is not whole."""
    model_path, card_path = out_dir / MODEL_FILE, out_dir / MODEL_CARD
    if not (model_path.is_file() and card_path.is_file()):
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        raise ModelCardError(f"unreadable model card ({err})", path=card_path) from err
    training = card.get("training") or {}
    return TrainResult(model_path=model_path, card_path=card_path,
                       history=read_history(out_dir / HISTORY_FILE),
                       best_epoch=training.get("best_epoch"),
                       metrics=card.get("metrics") or {}, out_dir=out_dir, notes=notes)


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
        TrainingError: The model has no weights (gap filling).
        RerunError: ``out_dir`` holds a run made with other settings (the message names
            the setting and both values), or a run of more epochs than asked; nothing
            is written.
        OutputWriteError: A file could not be written (full disk...); it names the file
            and the cause, and no truncated file is left.
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
    # run.json: what a rerun is checked against, and the card's training section.
    run = run_record(
        model=config.model_dump(mode="json"), dataset=dataset, manifest=manifest,
        settings={"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                  "loss": loss_name, "carl_lambda": settings.carl_lambda,
                  "seed": options.seed, "mixed_precision": options.mixed_precision,
                  "train_split": options.train_split, "valid_splits": splits,
                  "patience": options.patience, "steps_per_epoch": options.steps_per_epoch,
                  "augment": options.augment})

    backup = out_dir / BACKUP_DIR
    history_path = out_dir / HISTORY_FILE
    start = backup_epoch(backup) if options.resume else 0
    notes: list[str] = []
    if options.resume:
        # Before anything is built or written: a refused rerun leaves the folder as it was.
        note = check_rerun(out_dir, read_run(out_dir / RUN_FILE), run, start)
        notes += [note] if note else []
        monitor = "val_loss" if splits else "loss"
        if start >= epochs or _stopped(read_history(history_path), monitor, start,
                                       options.patience):
            done = _complete(out_dir, [])
            if done is not None:
                # Not "continuing": early stopping ended the run, more epochs add nothing.
                done.notes.append(f"the run in {out_dir} is complete ({start} epochs"
                                  f"{'' if start >= epochs else ', stopped early'}): "
                                  "nothing to train, nothing written")
                return done

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
        stopped = _stopped(previous, monitor, start, options.patience)
        all_callbacks: list[keras.callbacks.Callback] = [SetEpoch(train_data)]
        if len(splits) > 1:
            all_callbacks.append(SplitValidation({s: valid[s] for s in splits[1:]}))
        all_callbacks += [
            BestCheckpoint(out_dir / BEST_MODEL, monitor,
                           best[0] if best and (out_dir / BEST_MODEL).is_file() else None),
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
        all_callbacks.append(AtomicBackup(backup, delete_checkpoint=False))
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
        final.set_weights(read_keras(out_dir / BEST_MODEL).get_weights())
    else:
        final.set_weights(model.get_weights())
    metrics = {s: evaluate_model(final, final_spec, dataset, s, batch_size, cloudy=cloudy)
               for s in splits}
    card = model_card(final_spec, config, dataset_manifest=manifest, dataset_path=dataset,
                      metrics=metrics, seed=options.seed, history=history,
                      training={k: v for k, v in run.items() if k not in ("model", "dataset")}
                      | {"best_epoch": best[1] + 1 if best else None, "monitor": monitor})
    model_path, card_path = _save_model_and_card(final, out_dir, card)
    return TrainResult(model_path=model_path, card_path=card_path, history=history,
                       best_epoch=best[1] + 1 if best else None, metrics=metrics,
                       out_dir=out_dir, notes=notes)
