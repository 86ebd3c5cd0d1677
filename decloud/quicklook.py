"""Quicklook PNGs: S2 true colour and S1 false colour, with robust stretches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from decloud.errors import ArgumentError
from decloud.writers import atomic_file

__all__ = ["s1_false_colour", "s2_true_colour", "stretch", "write_png"]


def stretch(band: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Map a band's [low, high] percentiles of valid pixels onto [0, 1]; NaN gives 0."""
    valid = np.isfinite(band)
    out = np.zeros(band.shape, dtype=np.float32)
    if not valid.any():
        return out
    lo, hi = np.percentile(band[valid], [low, high])
    scale = hi - lo if hi > lo else 1.0
    out[valid] = np.clip((band[valid] - lo) / scale, 0.0, 1.0)
    return out


def s2_true_colour(rgb: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """RGB uint8 image ``(h, w, 3)`` from reflectances ``(3, h, w)`` (B04, B03, B02).

    Each band is stretched between its own percentiles of valid pixels, which keeps
    hazy or top-of-atmosphere scenes readable; nodata (NaN in any band) is black.
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ArgumentError(f"expects reflectances of shape (3, h, w), not {rgb.shape}",
                            field="rgb")
    out = (np.stack([stretch(b, low, high) for b in rgb], axis=-1) * 255).round()
    out[~np.isfinite(rgb).all(axis=0)] = 0
    return out.astype(np.uint8)


def s1_false_colour(vv_db: np.ndarray, vh_db: np.ndarray) -> np.ndarray:
    """RGB uint8 image: red VV, green VH, blue VV/VH (the dB difference), each stretched."""
    ratio = vv_db - vh_db
    channels = [stretch(vv_db), stretch(vh_db), stretch(ratio)]
    out = (np.stack(channels, axis=-1) * 255).round().astype(np.uint8)
    out[~(np.isfinite(vv_db) & np.isfinite(vh_db))] = 0
    return out


def write_png(path: str | os.PathLike[str], rgb: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write an RGB uint8 ``(h, w, 3)`` array as a PNG, atomically."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ArgumentError(f"expects a uint8 RGB image (h, w, 3), not {rgb.dtype} "
                            f"{rgb.shape}", path=path, field="rgb")
    # Imported here: matplotlib costs 0.7-4 s per process, and only PNG writing needs it.
    from matplotlib import image as mpimg

    with atomic_file(path, overwrite=overwrite) as tmp:
        mpimg.imsave(tmp, rgb, format="png")
    return Path(path)
