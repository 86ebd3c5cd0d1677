"""Reading datasets: samples, seeded shuffling and aligned augmentation, preview.

The Keras adapter is :class:`decloud.training.data.Batches` (tests/training/test_data.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from decloud.constants import S2_NODATA
from decloud.datasets import TrainingDataset, augment_sample, preview
from decloud.errors import DatasetError, OutputExistsError
from tests.datasets.conftest import N


def test_samples_and_errors(reference: Path) -> None:
    data = TrainingDataset(reference)
    assert len(data) == N and data.shard_sizes == [3, 3, 2]
    assert data[-1]["s2_t"].shape == (32, 32, 2)
    np.testing.assert_array_equal(data[N - 1]["s1_t"], data[-1]["s1_t"])
    with pytest.raises(IndexError):
        data[N]
    with pytest.raises(DatasetError, match="no split 'val'"):
        TrainingDataset(reference, "val")
    with pytest.raises(DatasetError, match="no manifest"):
        TrainingDataset(reference / "shards")


def test_augmentation_is_the_same_on_every_key(reference: Path) -> None:
    data = TrainingDataset(reference)
    batches = list(data.batches(3, seed=5, epoch=2))
    assert [len(b["s2_t"]) for b in batches] == [3, 3, 2]
    order = data.order(seed=5, epoch=2)
    transforms = data.transforms(seed=5, epoch=2)
    assert sorted(order.tolist()) == list(range(N))
    assert len({(int(r), int(f)) for r, f in transforms}) > 1
    flat = {k: np.concatenate([b[k] for b in batches]) for k in data.keys}
    for position, index in enumerate(order):
        original = data[int(index)]
        rotation, flip = (int(v) for v in transforms[index])
        expected = augment_sample(original, rotation, bool(flip))
        for key in data.keys:
            np.testing.assert_array_equal(flat[key][position], expected[key])
        # 10 m and 20 m keys stay aligned: nodata (past the tile's edge) at the same place.
        nodata10 = flat["s2_t"][position][::2, ::2, 0] == S2_NODATA
        nodata20 = flat["s2_20m_t"][position][..., 0] == S2_NODATA
        np.testing.assert_array_equal(nodata10, nodata20)
    # One flip by hand: rotation 0 + flip is a left-right mirror.
    sample = data[0]
    mirrored = augment_sample(sample, 0, True)
    np.testing.assert_array_equal(mirrored["s2_t"], sample["s2_t"][:, ::-1])
    np.testing.assert_array_equal(mirrored["s2_20m_t"], sample["s2_20m_t"][:, ::-1])
    np.testing.assert_array_equal(augment_sample(sample, 2, True)["s1_t"],
                                  sample["s1_t"][::-1])  # a vertical flip


def test_shuffling_is_seeded_per_epoch(reference: Path) -> None:
    data = TrainingDataset(reference)

    def epoch(seed: int, number: int) -> list[np.ndarray]:
        return [b["s2_t"] for b in data.batches(4, keys=["s2_t"], seed=seed, epoch=number)]

    for a, b in zip(epoch(1, 0), epoch(1, 0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(epoch(1, 0), epoch(1, 1), strict=True))
    plain = next(data.batches(N, shuffle=False, augment=False))
    for i in range(N):
        np.testing.assert_array_equal(plain["s2_mask_t"][i], data[i]["s2_mask_t"])
    assert list(data.batches(3, drop_last=True))[-1]["s2_t"].shape[0] == 3


def test_preview_writes_a_png(reference: Path, tmp_path: Path) -> None:
    out = preview(reference, tmp_path / "p.png", n=3)
    image = mpimg.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > image.shape[0]
    with pytest.raises(OutputExistsError, match="exists already"):
        preview(reference, out, n=3)
    assert preview(TrainingDataset(reference), out, n=1, overwrite=True) == out
