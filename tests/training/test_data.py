"""The Keras data adapter: seeded epochs that a resumed run draws again, packed targets."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from decloud.datasets import TrainingDataset
from decloud.errors import DatasetError
from decloud.models import build, get_config
from decloud.models.config import ModelConfig
from decloud.training import Batches
from decloud.training.data import target_keys


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_an_epoch_is_drawn_again_exactly(tiny: ModelConfig, dataset: Path) -> None:
    _, spec = build(tiny)
    data = TrainingDataset(dataset, "train")
    running = Batches(data, spec, 5, "t", shuffle=True, augment=True, seed=3)
    first = running.raw(0)
    running.set_epoch(2)
    # A run resumed at epoch 2 starts with the batches an uninterrupted one had there.
    resumed = Batches(data, spec, 5, "t", shuffle=True, augment=True, seed=3, epoch=2)
    assert all(_same(running.raw(i), resumed.raw(i)) for i in range(len(resumed)))
    assert not _same(first, resumed.raw(0))  # epochs differ
    x, y = resumed[0]
    assert set(x) == set(spec.inputs) and all(v.dtype == np.float32 for v in x.values())
    # Packed: 2C + 2 channels (target, cloudy input, cloud and validity masks).
    assert y["s2_target"].shape[-1] == 2 * spec.outputs["s2_target"].channels + 2


def test_steps_repeat_the_split_and_the_adapter_pickles(tiny: ModelConfig,
                                                        dataset: Path) -> None:
    _, spec = build(tiny)
    data = TrainingDataset(dataset, "train")
    batches = Batches(data, spec, 8, "t", steps=7, workers=2, use_multiprocessing=True)
    assert len(batches) == 7 and batches.per_pass == 3  # 18 samples
    assert _same(batches.raw(4), batches.raw(1))
    assert batches.workers == 2 and batches.use_multiprocessing
    again = pickle.loads(pickle.dumps(batches))
    assert _same(again.raw(2), batches.raw(2))
    with pytest.raises(DatasetError, match="batch size must be positive"):
        Batches(data, spec, 0, "t")


def test_target_keys_follow_each_output_kind() -> None:
    config = get_config("dsen2cr").model_copy(deep=True)
    config.network.features, config.network.blocks = 8, 1  # type: ignore[union-attr]
    _, spec = build(config)
    assert target_keys(spec, "t") == ["s2_target", "s2_20m_target", "s2_t", "s2_20m_t",
                                      "s2_mask_t"]


def test_fit_epoch_k_draws_the_dataset_epoch_k(tiny: ModelConfig, dataset: Path) -> None:
    # Real Keras drives Batches (the one adapter; the datasets' own as_keras, gone, trained
    # epoch k on epoch k + 1's draw because Keras calls on_epoch_end once before fitting).
    import keras

    from decloud.training.callbacks import SetEpoch

    model, spec = build(tiny)
    data = TrainingDataset(dataset, "train")

    class Recording(Batches):
        """Batches that log, for every batch Keras takes, Keras' epoch and the samples."""

        keras_epoch: ClassVar[int] = -1
        fed: ClassVar[list[tuple[int, int, tuple[int, ...]]]] = []

        def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray],
                                                    dict[str, np.ndarray]]:
            chunk = self.order[index * self.batch_size:(index + 1) * self.batch_size]
            self.fed.append((self.keras_epoch, index, tuple(int(i) for i in chunk)))
            return super().__getitem__(index)

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            Recording.keras_epoch = epoch

    batches = Recording(data, spec, 6, "t", shuffle=True, augment=True, seed=2)
    def l1(channels: int) -> Any:
        return lambda y, p: keras.ops.mean(keras.ops.abs(p - y[..., :channels]))

    model.compile(optimizer="sgd", loss={k: l1(s.channels) for k, s in spec.outputs.items()})
    model.fit(batches, epochs=3, verbose=0, callbacks=[SetEpoch(batches), Clock()])
    fitted = [(e, i, chunk) for e, i, chunk in Recording.fed if e >= 0]
    assert sorted({e for e, _, _ in fitted}) == [0, 1, 2]
    for epoch, index, chunk in fitted:
        expected = data.order(shuffle=True, seed=2, epoch=epoch)[index * 6:(index + 1) * 6]
        assert chunk == tuple(int(i) for i in expected), (epoch, index)
    # Each epoch is a different draw.
    firsts = {e: chunk for e, i, chunk in fitted if i == 0}
    assert len(set(firsts.values())) == 3
