"""The learning curve (``history.csv``) and the state a resumed run picks up from it.

Keras' ``BackupAndRestore`` restores weights, optimiser state and the epoch; what early
stopping and checkpointing knew (the best value, its epoch, the patience used) is read
back from the curve, so that a resumed run decides what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path

from decloud.writers import atomic_file

__all__ = ["backup_epoch", "best_epoch", "read_history", "truncate_history"]

#: The file ``BackupAndRestore`` writes the finished epoch into.
_BACKUP_METADATA = "training_metadata.json"


def read_history(path: Path) -> dict[str, list[float]]:
    """``history.csv`` as lists by column (the last row of an epoch logged twice wins).

    Empty cells (a quantity not logged in some epochs) read as NaN; a missing file as
    an empty curve.
    """
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_epoch: dict[int, dict[str, str]] = {}
    for row in rows:
        with contextlib.suppress(KeyError, ValueError):
            by_epoch[int(row["epoch"])] = row
    columns = list(rows[0]) if rows else []
    out: dict[str, list[float]] = {c: [] for c in columns}
    for epoch in sorted(by_epoch):
        for c in columns:
            value = by_epoch[epoch].get(c)
            out[c].append(float(value) if value not in (None, "") else math.nan)
    return out


def truncate_history(path: Path, epochs: int) -> None:
    """Keep the rows of epochs below ``epochs`` (those of the backup's state)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < epochs]
    with atomic_file(path, overwrite=True) as tmp, tmp.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def best_epoch(history: Mapping[str, list[float]], monitor: str) -> tuple[float, int] | None:
    """The best (lowest) monitored value and its epoch (from 0), None if none is finite."""
    values = history.get(monitor, [])
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    value, position = min(finite)
    return value, int(history["epoch"][position])


def backup_epoch(folder: Path) -> int:
    """Epochs finished according to a ``BackupAndRestore`` folder (0 without one).

    An unreadable backup counts as none: the run starts over rather than fail.
    """
    path = folder / _BACKUP_METADATA
    if not path.is_file():
        return 0
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
