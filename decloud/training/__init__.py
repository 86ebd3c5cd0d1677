"""Training: the trainer, its callbacks, the one Keras data adapter, the device policy.

:func:`train` trains a model configuration on a dataset folder, resumably, and writes
``model.keras`` with its card (see :mod:`decloud.training.trainer`); it takes its
settings as one :class:`TrainOptions`. :class:`Batches` is the Keras data adapter.

Attributes load on first use: :class:`TrainOptions` needs no Keras, the rest does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decloud.training.data import Batches
    from decloud.training.history import read_history
    from decloud.training.options import TrainOptions
    from decloud.training.previews import write_preview
    from decloud.training.trainer import TrainResult, train

__all__ = ["Batches", "TrainOptions", "TrainResult", "read_history", "train", "write_preview"]

_WHERE = {
    "Batches": "decloud.training.data",
    "TrainOptions": "decloud.training.options",
    "TrainResult": "decloud.training.trainer",
    "read_history": "decloud.training.history",
    "train": "decloud.training.trainer",
    "write_preview": "decloud.training.previews",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
