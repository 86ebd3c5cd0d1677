"""Keras callbacks of :func:`decloud.training.train`: epochs, validation, history, stopping.

The order they run in matters (the trainer sets it): :class:`SetEpoch` first, so the
train batches know their epoch before any is read; :class:`SplitValidation` before the
loggers, so its ``val_<split>_*`` values are recorded; ``BackupAndRestore`` last, so that
a backup of epoch n means every record of epoch n is written.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras

from decloud.errors import OutputWriteError
from decloud.training.data import Batches
from decloud.writers import atomic_file, os_cause

__all__ = ["AtomicBackup", "BestCheckpoint", "CsvHistory", "ResumableEarlyStopping",
           "SetEpoch", "SplitValidation"]


class SetEpoch(keras.callbacks.Callback):
    """Tells the train batches which epoch begins; logs the learning rate at its end.

    Args:
        data: The train batches.
    """

    def __init__(self, data: Batches) -> None:
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Draw the epoch's order and augmentation."""
        # Called before any batch of the epoch is read (prefetching included).
        self.data.set_epoch(epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Log the learning rate the epoch ended with."""
        if logs is not None:
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            logs["learning_rate"] = float(rate)


class SplitValidation(keras.callbacks.Callback):
    """Evaluates the model on more validation splits at each epoch's end.

    Adds ``val_<split>_<metric>`` (the compiled loss and metrics) to the epoch's logs,
    for the callbacks after it (CSV history, TensorBoard) to record.

    Args:
        splits: Batches of each extra validation split, by split name.
    """

    def __init__(self, splits: Mapping[str, Batches]) -> None:
        super().__init__()
        self.splits = splits

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Evaluate each extra split into the epoch's logs."""
        if logs is None:
            return
        for split, data in self.splits.items():
            results = self.model.evaluate(data, verbose=0, return_dict=True)
            logs.update({f"val_{split}_{name}": float(v) for name, v in results.items()})


class CsvHistory(keras.callbacks.Callback):
    """The learning curve in a CSV file, one row per epoch, rewritten atomically.

    Unlike ``keras.callbacks.CSVLogger(append=True)``, a resumed run that logs other
    quantities (another set of validation splits) widens the header instead of writing
    rows that do not match it, and a crash never leaves a half-written row.

    Args:
        path: The CSV file (``history.csv``).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Write the epoch's row (replacing an earlier row of the same epoch)."""
        row = {"epoch": str(epoch)}
        for key, value in (logs or {}).items():
            # Non-numeric logs (none from Keras today) are not part of the curve.
            with contextlib.suppress(TypeError, ValueError):
                row[key] = repr(float(value))
        rows: list[dict[str, str]] = []
        header = ["epoch"]
        if self.path.is_file():
            with self.path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                header = list(reader.fieldnames or header)
                rows = [r for r in reader if r.get("epoch") != str(epoch)]
        header += sorted(k for k in row if k not in header)
        with atomic_file(self.path, overwrite=True) as tmp, tmp.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=header, restval="")
            writer.writeheader()
            writer.writerows([*rows, row])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that picks up the best value and patience of earlier runs.

    Args:
        state: ``(best value, its epoch, epochs waited since)`` of the runs before, or
            None for a fresh start.
        **kwargs: ``keras.callbacks.EarlyStopping``'s arguments.
    """

    def __init__(self, *, state: tuple[float, int, int] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Start from the earlier runs' state, if any."""
        super().on_train_begin(logs)
        if self.state is not None:
            self.best, self.best_epoch, self.wait = self.state


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model (with its optimiser state) when the monitored value improves.

    Like ``keras.callbacks.ModelCheckpoint(save_best_only=True, mode="min")``, but the
    file is written under a temporary name and renamed into place: a full disk or a
    crash mid-save never leaves a truncated checkpoint, and the previous best stays.

    Args:
        path: The ``.keras`` file (``best.keras``).
        monitor: The logged quantity to minimise.
        best: The best value of the runs before (a resumed run), or None.
    """

    def __init__(self, path: Path, monitor: str, best: float | None = None) -> None:
        super().__init__()
        self.path, self.monitor = path, monitor
        self.best = math.inf if best is None else best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Save the model if the epoch's monitored value is the best so far.

        Raises:
            OutputWriteError: The save failed (the cause, e.g. "no space left on
                device", is in the message); the earlier checkpoint is kept.
        """
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)) or float(value) >= self.best:
            return
        with atomic_file(self.path, overwrite=True) as tmp:
            self.model.save(tmp)
        self.best = float(value)


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose weights and epoch are written atomically.

    Keras writes ``latest.weights.h5`` in place, so a full disk leaves a truncated file
    that the next resume cannot load. Here both files are written under temporary
    names and renamed into place, the epoch last: a backup names an epoch only once
    that epoch's weights are complete.
    """

    def _save_model(self) -> None:
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        weights = Path(self._weights_path)
        # Keras wants the ``.weights.h5`` ending on the temporary name too.
        tmp = folder / f".{uuid.uuid4().hex[:8]}.tmp.weights.h5"
        try:
            self.model.save_weights(filepath=str(tmp), overwrite=True)
            tmp.replace(weights)
        except OSError as err:
            raise OutputWriteError(f"writing the backup failed, the previous one is kept: "
                                   f"{os_cause(err)}", path=weights) from err
        finally:
            tmp.unlink(missing_ok=True)
        with atomic_file(self._training_metadata_path, overwrite=True) as meta:
            meta.write_text(json.dumps({"epoch": self._current_epoch,
                                        "batch": self._last_batch_seen}))
