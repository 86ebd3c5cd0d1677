"""``TrainingDataset.as_keras`` against the installed Keras, not a stand-in.

Keras itself drives the adapter here: ``fit`` must route the batches' dict keys to the
model inputs and targets of the same names and call ``on_epoch_end`` every epoch;
``predict`` (with and without worker threads) must see exactly the batches that
:meth:`TrainingDataset.batches` gives, in order.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from decloud.datasets import TrainingDataset
from tests.datasets.conftest import N

INPUTS = ["s2_t", "s1_t"]
TARGET = "s2_target"


def channels(data: TrainingDataset, key: str) -> int:
    return int(data.sample(0, [key])[key].shape[-1])


def mean_model(data: TrainingDataset, key: str) -> keras.Model:
    """Per-sample mean of one input, computed by Keras (float32)."""
    x = keras.Input((None, None, channels(data, key)), name=key)
    out = keras.layers.Lambda(
        lambda t: keras.ops.mean(keras.ops.cast(t, "float32"), axis=(1, 2, 3)))(x)
    return keras.Model({key: x}, out)


class EpochsSeen(keras.callbacks.Callback):
    """Records the adapter's epoch (the order and augmentation drawn) in each fit epoch."""

    def __init__(self, batches: keras.utils.PyDataset) -> None:
        super().__init__()
        self.batches = batches
        self.seen: list[int] = []

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if batch == 0:
            self.seen.append(int(self.batches.epoch))


def fit(reference: Path, epochs: int) -> tuple[keras.callbacks.History, list[int]]:
    """Fit a 1 x 1 convolution from the two inputs to the target, on the adapter."""
    data = TrainingDataset(reference)
    batches = data.as_keras(3, inputs=INPUTS, targets=[TARGET], seed=2)
    assert isinstance(batches, keras.utils.PyDataset)
    assert len(batches) == math.ceil(N / 3)
    inputs = {k: keras.Input((None, None, channels(data, k)), name=k) for k in INPUTS}
    joined = keras.layers.Concatenate()(
        [keras.ops.cast(inputs[k], "float32") / 10000.0 for k in INPUTS])
    out = keras.layers.Conv2D(channels(data, TARGET), 1, name=TARGET)(joined)
    model = keras.Model(inputs, {TARGET: out})
    model.compile(optimizer="sgd", loss={TARGET: "mse"})
    seen = EpochsSeen(batches)
    history = model.fit(batches, epochs=epochs, verbose=0, callbacks=[seen])
    return history, seen.seen


def test_keras_fits_on_the_adapter(reference: Path) -> None:
    history, seen = fit(reference, 3)
    # Keras routed the dict keys to the inputs and target of the same names.
    assert len(history.history["loss"]) == 3
    assert all(math.isfinite(v) for v in history.history["loss"])
    # Keras called on_epoch_end after every epoch: each one drew its own order.
    assert len(seen) == 3 and len(set(seen)) == 3 and seen == sorted(seen)


@pytest.mark.xfail(strict=True, reason=(
    "Keras calls on_epoch_end once before the first epoch (EpochIterator.reset in fit), "
    "so as_keras, counting those calls, trains epoch k on the order and augmentation of "
    "TrainingDataset.batches(epoch=k + 1); decloud.training.data.Batches sets the epoch "
    "from Keras' epoch number instead"))
def test_fit_epoch_k_draws_the_dataset_epoch_k(reference: Path) -> None:
    _, seen = fit(reference, 2)
    assert seen == [0, 1]


def test_keras_predicts_the_batches_in_order(reference: Path) -> None:
    data = TrainingDataset(reference)
    model = mean_model(data, "s2_t")
    expected = np.concatenate([
        batch["s2_t"].astype(np.float64).mean(axis=(1, 2, 3))
        for batch in data.batches(3, keys=["s2_t"], seed=4, epoch=0)])
    assert expected.shape == (N,) and np.ptp(expected) > 0  # distinct samples
    for workers in (1, 2):
        batches = data.as_keras(3, inputs=["s2_t"], seed=4, workers=workers)
        got = model.predict(batches, verbose=0)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
