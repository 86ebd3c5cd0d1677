"""The Keras data adapter of training: a dataset split as ``(x, y)`` batches.

:class:`Batches` is the one ``keras.utils.PyDataset`` decloud trains with: model inputs
as float32, targets packed by :func:`decloud.models.losses.pack_targets`, and a seeded
order and augmentation per epoch that a resumed run draws again exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from decloud.datasets.reader import TrainingDataset
from decloud.errors import DatasetError
from decloud.keys import KeyKind, make_key, parse_key
from decloud.models.losses import pack_targets
from decloud.models.zoo import ModelSpec

__all__ = ["Batches", "target_keys"]


def target_keys(spec: ModelSpec, cloudy: str) -> list[str]:
    """Dataset keys :func:`~decloud.models.losses.pack_targets` reads for the outputs.

    Each output (``s2_target``, ``s2_20m_target``), the cloudy input of the same kind
    (``s2_<cloudy>``, ``s2_20m_<cloudy>``) and the cloudy input's mask.
    """
    keys = list(spec.outputs)
    for key in spec.outputs:
        kind = KeyKind.S2_20M if parse_key(key).kind is KeyKind.S2_20M else KeyKind.S2
        keys.append(make_key(kind, cloudy))
    keys.append(make_key(KeyKind.S2_MASK, cloudy))
    return list(dict.fromkeys(keys))


class Batches(keras.utils.PyDataset):
    """``(x, y)`` batches of a split for ``model.fit``: model inputs and packed targets.

    ``x`` holds the model's input keys as float32 (stored keys and the derived
    ``dt_<acq>``), ``y`` the packed targets of each output (2C + 2 channels, see
    :mod:`decloud.models.losses`). Each epoch has its own seeded order and augmentation,
    set by :meth:`set_epoch` (:class:`~decloud.training.callbacks.SetEpoch` calls it
    with Keras' epoch number, so that a resumed run draws what an uninterrupted one
    would; counting ``on_epoch_end`` calls would not do, as Keras also runs one to build
    the model).

    Args:
        data: The split.
        spec: The model's spec (inputs, outputs).
        batch_size: Samples per batch.
        cloudy: The reconstructed acquisition (``training.cloudy``).
        shuffle: Permute the samples each epoch.
        augment: Random rotation and flip per sample each epoch.
        seed: Seed of the order and augmentation.
        epoch: The first epoch's number.
        steps: Batches per epoch (the split's batches repeat if more are asked); all
            the split's batches by default.
        **pydataset_kwargs: ``keras.utils.PyDataset``'s ``workers``,
            ``use_multiprocessing`` and ``max_queue_size`` (the class is picklable).

    Raises:
        DatasetError: The split has no samples, or ``batch_size`` is not positive.
    """

    def __init__(self, data: TrainingDataset, spec: ModelSpec, batch_size: int, cloudy: str,
                 *, shuffle: bool = False, augment: bool = False, seed: int = 0,
                 epoch: int = 0, steps: int | None = None, **pydataset_kwargs: Any) -> None:
        super().__init__(**pydataset_kwargs)
        if len(data) == 0:
            raise DatasetError(f"split {data.split!r} has no samples", path=data.path,
                               field="split")
        if batch_size <= 0:
            raise DatasetError(f"batch size must be positive, not {batch_size}",
                               field="batch_size")
        self.data, self.batch_size, self.cloudy = data, batch_size, cloudy
        self.shuffle, self.augment, self.seed, self.epoch = shuffle, augment, seed, epoch
        self.inputs = list(spec.inputs)
        self.outputs = {k: s.channels for k, s in spec.outputs.items()}
        available = set(data.keys) | set(data.derived_keys)
        targets = [k for k in target_keys(spec, cloudy) if k in available]
        self.keys = list(dict.fromkeys(self.inputs + targets))
        self.per_pass = math.ceil(len(data) / batch_size)
        self.steps = steps or self.per_pass
        self._refresh()

    def _refresh(self) -> None:
        self.order = self.data.order(shuffle=self.shuffle, seed=self.seed, epoch=self.epoch)
        self.transforms = self.data.transforms(seed=self.seed, epoch=self.epoch) \
            if self.augment else None

    def __len__(self) -> int:
        return self.steps

    def raw(self, index: int) -> dict[str, np.ndarray]:
        """The dataset arrays of batch ``index`` of the current epoch."""
        index %= self.per_pass
        chunk = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.data.batch(chunk, keys=self.keys, transforms=self.transforms)

    def model_inputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``x`` of dataset arrays: the model's inputs as float32."""
        return {k: np.asarray(batch[k], dtype=np.float32) for k in self.inputs}

    def pack(self, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                           dict[str, np.ndarray]]:
        """``(x, y)`` of dataset arrays."""
        return self.model_inputs(batch), pack_targets(batch, self.outputs, cloudy=self.cloudy)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self.pack(self.raw(index))

    def set_epoch(self, epoch: int) -> None:
        """Draw the order and transforms of an epoch (from 0)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._refresh()
