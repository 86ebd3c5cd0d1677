"""Training: the trainer, its callbacks, the one Keras data adapter, the device policy.

:func:`train` trains a model configuration on a dataset folder, resumably, and writes
``model.keras`` with its card (see :mod:`decloud.training.trainer`); it takes its
settings as one :class:`TrainOptions`. :class:`Batches` is the Keras data adapter.

Attributes load on first use: :class:`TrainOptions` needs no Keras, the rest does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.training.data import Batches
    from decloud.training.history import read_history
    from decloud.training.options import TrainOptions
    from decloud.training.previews import write_preview
    from decloud.training.trainer import TrainResult, train

__all__ = ["Batches", "TrainOptions", "TrainResult", "read_history", "train", "write_preview"]

__getattr__, __dir__ = lazy_attributes(__name__, {
    "Batches": "data",
    "TrainOptions": "options",
    "TrainResult": "trainer",
    "read_history": "history",
    "train": "trainer",
    "write_preview": "previews",
}, __all__)
