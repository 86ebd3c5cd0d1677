"""The on-disk format of decloud training datasets: names, keys and their encodings.

A dataset is a folder::

    manifest.json               written last: its presence means the dataset is complete
    plan.json                   the plan (samples, seeds, layout) and the writer settings
    shards/<split>-00000.npz    fixed slices of each split's samples, in plan order

Each shard is a plain ``.npz`` (``numpy.load`` reads it, no pickle) holding, for each
key, an array ``(n, H, W, C)`` (channels last) and ``meta``, an array of ``n`` JSON
strings describing each sample (tile, position, footprints, products and dates).
Zip entries carry a fixed timestamp, so a shard's bytes depend only on its content.

Keys of a layout with acquisitions ``a`` (see :meth:`decloud.layouts.Layout.keys`; the
grammar and each kind's dtype, nodata and encoding are :mod:`decloud.keys`'s):

============== ======= ==================== =============================================
key            dtype   channels             values
============== ======= ==================== =============================================
``s2_a``       int16   B02 B03 B04 B08      reflectance x 10000, nodata -10000, 10 m
``s2_20m_a``   int16   B05 B06 B07 B8A B11  reflectance x 10000, nodata -10000, on the
                       B12                  20 m grid (half the patch size)
``s2_mask_a``  uint8   mask                 :class:`~decloud.constants.MaskClass`, 255
                                            nodata, 10 m
``s1_a``       uint16  VV VH                prepared encoding (:mod:`decloud.s1`), 0
                                            nodata, 10 m
``dem``        float32 elevation            metres, nodata -32768, 10 m
============== ======= ==================== =============================================

Values are stored raw (encoded as above, not normalised): models normalise inside.
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from decloud.keys import KINDS, REFERENCE_RESOLUTION, KeyKind, parse_key
from decloud.layouts import Layout

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "META_KEY",
    "PLAN_FILE",
    "SHARD_DIR",
    "KeySpec",
    "dataset_keys",
    "shard_name",
    "write_npz",
]

#: Name and version of the format, recorded in every manifest.
FORMAT_NAME = "decloud-dataset"
FORMAT_VERSION = 1

MANIFEST = "manifest.json"
PLAN_FILE = "plan.json"
SHARD_DIR = "shards"
#: The per-sample JSON descriptions in every shard.
META_KEY = "meta"

# Zip entries get this fixed time: a shard's bytes then depend only on its arrays.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class KeySpec:
    """What one key of a dataset holds.

    Attributes:
        name: The key (``s2_t``, ``s2_20m_t``, ``s2_mask_t``, ``s1_t``, ``dem``).
        kind: The key's kind (:class:`~decloud.keys.KeyKind`: ``s2``, ``s2_20m``,
            ``s2_mask``, ``s1`` or ``dem``).
        acquisition: The layout acquisition, None for ``dem``.
        dtype: Numpy dtype name.
        bands: Channel names, in order.
        resolution: Pixel size in metres.
        size: Patch side in pixels at that resolution.
        nodata: The value of missing pixels.
        scale: ``physical = value / scale`` where it applies (S2), else None.
        encoding: How values encode physical quantities, in words.
    """

    name: str
    kind: KeyKind
    acquisition: str | None
    dtype: str
    bands: tuple[str, ...]
    resolution: float
    size: int
    nodata: float
    scale: float | None
    encoding: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one sample: ``(H, W, C)``."""
        return self.size, self.size, len(self.bands)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (what the manifest records)."""
        out = asdict(self)
        out["bands"] = list(self.bands)
        out["shape"] = list(self.shape)
        return out


def dataset_keys(
    layout: Layout, patch_size: int, bands10: tuple[str, ...], bands20: tuple[str, ...]
) -> dict[str, KeySpec]:
    """The keys of a layout's samples, in :meth:`Layout.keys` order.

    Dtype, nodata, scale and encoding of each key come from :data:`decloud.keys.KINDS`.

    Args:
        layout: The layout.
        patch_size: Patch side at 10 m (the 20 m keys have a side scaled by the
            resolution ratio: half of it).
        bands10: S2 bands of the ``s2_<acq>`` keys (read at 10 m).
        bands20: S2 bands of the ``s2_20m_<acq>`` keys (read at 20 m); empty: no
            ``s2_20m_<acq>`` key at all.
    """
    out: dict[str, KeySpec] = {}
    names: list[str] = layout.keys()
    for key in names:
        kind, acq = parse_key(key)
        if kind is KeyKind.S2_20M and not bands20:
            continue
        spec = KINDS[kind]
        bands = {KeyKind.S2: bands10, KeyKind.S2_20M: bands20}.get(kind, spec.default_bands)
        size = int(patch_size * REFERENCE_RESOLUTION // spec.resolution)
        out[key] = KeySpec(key, kind, acq, spec.dtype, tuple(bands), spec.resolution,
                           size, spec.nodata, spec.scale, spec.encoding)
    return out


def shard_name(split: str, number: int) -> str:
    """File name of a shard, relative to the dataset folder."""
    return f"{SHARD_DIR}/{split}-{number:05d}.npz"


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, compress: bool = False) -> None:
    """Write arrays as an ``.npz`` that ``numpy.load`` reads, with fixed zip timestamps.

    Unlike :func:`numpy.savez`, equal arrays give equal bytes (no write time inside).
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as handle:
                _write_npy(handle, np.ascontiguousarray(array))


def _write_npy(handle: IO[bytes], array: np.ndarray) -> None:
    """``numpy.lib.format.write_array``'s bytes, without its copy of the data.

    Into anything but a real file, numpy copies the array chunk by chunk
    (``tobytes``) before writing; here the zip member takes the array's own memory.
    Arrays numpy would pickle, or whose header needs format 2.0, go through numpy.
    """
    header = np.lib.format.header_data_from_array_1_0(array)
    if array.dtype.hasobject or array.dtype.kind == "T" or len(repr(header)) > 60_000:
        np.lib.format.write_array(handle, array, allow_pickle=False)
        return
    np.lib.format.write_array_header_1_0(handle, header)
    handle.write(array.reshape(-1).view(np.uint8).data)
