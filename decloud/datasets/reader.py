"""Reading a dataset: samples, and shuffled and augmented batches, with numpy only.

Keras training reads a split through :class:`decloud.training.data.Batches`, the one
Keras adapter (it takes a :class:`TrainingDataset`).

Arrays come back as stored (see :mod:`decloud.datasets.format`): S2 int16 reflectance
x 10000, masks uint8, S1 uint16 prepared, DEM float32 metres, channels last. They are
not normalised: models normalise inside, so that a trained model takes the same raw
encodings at inference.

Shuffling works shard by shard: each epoch permutes the order of the shards, then
the samples within groups of ``shuffle_shards`` consecutive shards (of that order). Only
those few shards need to be in memory at once, however large the dataset.

Besides the stored keys, each acquisition ``a`` has a derived key ``dt_a``: float32
``(1,)``, the days from the reference acquisition's S2 date to ``a``'s (S2 date, or the
S1 date where ``a`` has no S2; NaN where ``a`` has no product), computed from the
samples' meta (gap-filling models take them as inputs). They are listed in
:attr:`TrainingDataset.derived_keys`, not in :attr:`TrainingDataset.keys`.

Augmentation applies one random transform of the square's 8 symmetries (a rotation by
a multiple of 90 degrees, then optionally a left-right flip) to every key of a sample,
the 20 m keys included: their window has the same footprint and centre, so the keys
stay aligned.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from decloud.datasets.format import FORMAT_NAME, FORMAT_VERSION, MANIFEST, META_KEY
from decloud.errors import DatasetError
from decloud.keys import DT_PREFIX, KeyKind, day_offset, make_key, parse_key

__all__ = ["DT_PREFIX", "TrainingDataset", "augment_sample", "load_manifest"]


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a complete dataset folder.

    Raises:
        DatasetError: No manifest (the dataset is incomplete), or another format.
    """
    folder = Path(path)
    try:
        manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError as err:
        hint = " (writing was interrupted: run the same create again to finish it)" \
            if folder.is_dir() and any(folder.iterdir()) else ""
        raise DatasetError(f"not a complete decloud dataset: no {MANIFEST}{hint}",
                           path=folder) from err
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"unreadable {MANIFEST} ({err})", path=folder) from err
    fmt = manifest.get("format", {})
    if fmt.get("name") != FORMAT_NAME or fmt.get("version") != FORMAT_VERSION:
        raise DatasetError(f"format {fmt}, this decloud reads {FORMAT_NAME} version "
                           f"{FORMAT_VERSION}", path=folder / MANIFEST, field="format")
    return manifest


def augment_sample(sample: dict[str, np.ndarray], rotation: int,
                   flip: bool) -> dict[str, np.ndarray]:
    """Rotate every ``(H, W, C)`` array by ``rotation`` x 90 degrees, then flip left-right.

    Args:
        sample: Arrays by key (``meta`` or other non-image entries pass unchanged).
        rotation: Quarter turns counter-clockwise (0-3).
        flip: Flip left-right after the rotation (a vertical flip is rotation 2 + flip).
    """
    out = {}
    for key, array in sample.items():
        if array.ndim != 3:
            out[key] = array
            continue
        turned = np.rot90(array, k=rotation, axes=(0, 1))
        out[key] = np.ascontiguousarray(turned[:, ::-1] if flip else turned)
    return out


class TrainingDataset:
    """One split of a dataset folder, read with numpy only.

    Args:
        path: The dataset folder (with ``manifest.json``).
        split: The split to read.
        cache_shards: Shards kept in memory (least recently used ones are dropped).

    Raises:
        DatasetError: Incomplete dataset, unknown split, or a missing shard.
    """

    def __init__(self, path: str | Path, split: str = "train", *, cache_shards: int = 4) -> None:
        self.path = Path(path)
        self.manifest = load_manifest(self.path)
        splits = self.manifest["splits"]
        if split not in splits:
            raise DatasetError(f"no split {split!r} (splits: {', '.join(splits)})",
                               path=self.path, field="split")
        self.split = split
        self.keys: list[str] = list(self.manifest["keys"])
        layout = self.manifest.get("resolved_layout") or self.manifest.get("layout") or {}
        acquisitions: dict[str, Any] = layout.get("acquisitions", {})
        self.reference: str | None = next(
            (name for name, acq in acquisitions.items() if acq.get("reference")), None)
        #: Keys computed from the meta (``dt_<acq>``), readable like stored keys.
        self.derived_keys: list[str] = [make_key(KeyKind.DT, name) for name in acquisitions] \
            if self.reference is not None else []
        self._shards = [self.path / s["file"] for s in splits[split]["shards"]]
        sizes = [int(s["samples"]) for s in splits[split]["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for shard in self._shards:
            if not shard.is_file():
                raise DatasetError("shard missing", path=shard)
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._cache_size = max(1, cache_shards) * (len(self.keys) + len(self.derived_keys) + 1)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"TrainingDataset({str(self.path)!r}, split={self.split!r}, n={len(self)})"

    @property
    def shard_sizes(self) -> list[int]:
        """Samples per shard."""
        return [int(v) for v in np.diff(self._starts)]

    # Access -----------------------------------------------------------------------

    def _locate(self, index: int) -> tuple[int, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of a split of {len(self)}")
        index %= len(self)
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def _array(self, shard: int, key: str) -> np.ndarray:
        cached = self._cache.get((shard, key))
        if cached is not None:
            self._cache.move_to_end((shard, key))
            return cached
        if key in self.derived_keys:
            # Derived keys are dt_<acq>: the acquisition is never None.
            array = self._time_offsets(shard, parse_key(key).acquisition or "")
        elif key not in self.keys and key != META_KEY:
            raise DatasetError(f"no key {key!r} (keys: "
                               f"{', '.join(self.keys + self.derived_keys)})",
                               path=self.path, field=key)
        else:
            try:
                with np.load(self._shards[shard], allow_pickle=False) as npz:
                    array = npz[key]
            except (zipfile.BadZipFile, EOFError, zlib.error) as err:
                # A copy or a write cut short: name the shard, not zipfile's internals.
                raise DatasetError(
                    f"shard is truncated or corrupt, cannot read key {key} "
                    f"({type(err).__name__}: {err}); rerun the dataset's `dataset create` "
                    "to rewrite it", path=self._shards[shard], field=key) from err
            except (OSError, ValueError, KeyError) as err:
                raise DatasetError(f"cannot read key {key} ({err})",
                                   path=self._shards[shard]) from err
        self._cache[(shard, key)] = array
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return array

    def _time_offsets(self, shard: int, acquisition: str) -> np.ndarray:
        """``(n, 1)`` float32 days from the reference to ``acquisition``, for a shard."""
        if self.reference is None:  # derived keys exist only with a reference
            raise DatasetError("the layout has no reference acquisition: no dt keys",
                               path=self.path, field=make_key(KeyKind.DT, acquisition))
        out = np.full((self.shard_sizes[shard], 1), np.nan, dtype=np.float32)
        for row, text in enumerate(self._array(shard, META_KEY)):
            acquisitions = json.loads(str(text))["acquisitions"]
            reference = _acquired(acquisitions.get(self.reference, {}))
            when = _acquired(acquisitions.get(acquisition, {}))
            out[row, 0] = day_offset(when, reference)
        return out

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """The arrays ``(H, W, C)`` of one sample, by key (raw encodings)."""
        return self.sample(index)

    def sample(self, index: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The arrays of one sample, for some keys (all by default)."""
        shard, row = self._locate(index)
        return {k: self._array(shard, k)[row] for k in (keys or self.keys)}

    def meta(self, index: int) -> dict[str, Any]:
        """The description of one sample: tile, position, footprints, products, dates."""
        shard, row = self._locate(index)
        description: dict[str, Any] = json.loads(str(self._array(shard, META_KEY)[row]))
        return description

    # Epochs -------------------------------------------------------------------------

    def order(self, *, shuffle: bool = True, seed: int = 0, epoch: int = 0,
              shuffle_shards: int = 4) -> np.ndarray:
        """Sample indexes of an epoch, in plan order when not shuffling.

        Shards are permuted, then samples within groups of ``shuffle_shards`` shards.
        """
        if not shuffle:
            return np.arange(len(self), dtype=np.int64)
        rng = np.random.default_rng([seed, epoch])
        shards = rng.permutation(len(self._shards))
        out = []
        group = max(1, shuffle_shards)
        for g in range(0, len(shards), group):
            members = [np.arange(self._starts[s], self._starts[s + 1]) for s in shards[g:g + group]]
            out.append(rng.permutation(np.concatenate(members)))
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def transforms(self, *, seed: int = 0, epoch: int = 0) -> np.ndarray:
        """Per sample ``(rotation 0-3, flip 0/1)`` of an epoch, ``(n, 2)`` int.

        Drawn from a stream of their own, so a sample's transform does not depend on
        the order samples are read in.
        """
        rng = np.random.default_rng([seed, epoch, 1])
        return np.stack([rng.integers(0, 4, len(self)), rng.integers(0, 2, len(self))], axis=1)

    def batch(self, indexes: Sequence[int] | np.ndarray, *, keys: Sequence[str] | None = None,
              transforms: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Stacked arrays ``(b, H, W, C)`` of some samples, augmented by ``transforms``."""
        keys = list(keys or self.keys)
        items = []
        for index in indexes:
            sample = self.sample(int(index), keys)
            if transforms is not None:
                rotation, flip = transforms[int(index)]
                sample = augment_sample(sample, int(rotation), bool(flip))
            items.append(sample)
        return {k: np.stack([s[k] for s in items]) for k in keys}

    def batches(
        self,
        batch_size: int,
        *,
        keys: Sequence[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        augment: bool = True,
        epoch: int = 0,
        drop_last: bool = False,
        shuffle_shards: int = 4,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield the batches of one epoch: dicts of stacked arrays ``(b, H, W, C)``.

        Args:
            batch_size: Samples per batch.
            keys: Keys to read (all by default).
            shuffle: Permute samples (see :meth:`order`).
            seed: Seed of the shuffling and augmentation.
            augment: Apply a random rotation and flip per sample, the same to every key.
            epoch: Epoch number: each epoch has its own order and transforms.
            drop_last: Leave out a last, smaller batch.
            shuffle_shards: Shards whose samples are mixed together.
        """
        if batch_size <= 0:
            raise DatasetError(f"batch size must be positive, not {batch_size}",
                               field="batch_size")
        order = self.order(shuffle=shuffle, seed=seed, epoch=epoch,
                           shuffle_shards=shuffle_shards)
        transforms = self.transforms(seed=seed, epoch=epoch) if augment else None
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            if drop_last and len(chunk) < batch_size:
                return
            yield self.batch(chunk, keys=keys, transforms=transforms)


def _acquired(entry: dict[str, Any]) -> datetime | None:
    """The date of an acquisition of a sample's meta: its S2 product's, else its S1's.

    Layout windows are relative to the reference's S2 date, hence S2 first.
    """
    for sensor in ("s2", "s1"):
        if entry.get(sensor):
            return datetime.fromisoformat(str(entry[sensor]["acquired"]).replace("Z", "+00:00"))
    return None
