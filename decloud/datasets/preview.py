"""A PNG contact sheet of a dataset: one row per sample, one column per image key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from decloud.constants import DEM_NODATA, S2_NODATA, S2_RGB, S2_SCALE, MaskClass
from decloud.datasets.reader import TrainingDataset
from decloud.errors import DatasetError
from decloud.quicklook import s1_false_colour, s2_true_colour, stretch
from decloud.s1 import decode_prepared, linear_to_db
from decloud.writers import atomic_file

__all__ = ["preview", "render_key"]

# Mask colours: clear green, cloud white, cirrus light blue, shadow dark grey, nodata black.
_MASK_VALUES = [MaskClass.CLEAR, MaskClass.CLOUD, MaskClass.CIRRUS, MaskClass.SHADOW,
                MaskClass.NODATA]
_MASK_CMAP = ListedColormap(["#3a7d44", "#ffffff", "#9fd3f5", "#555555", "#000000"])
# A colour index per MaskClass value (255 nodata included).
_MASK_INDEX = np.full(256, 4, np.uint8)
for _i, _cls in enumerate(_MASK_VALUES):
    _MASK_INDEX[int(_cls)] = _i
# The 20 m bands shown, in order of preference (SWIR, NIR, red edge).
_S2_20M_SHOW = ("B12", "B8A", "B05")


def _reflectance(array: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` int16 to ``(C, H, W)`` float reflectance, NaN nodata."""
    out = np.moveaxis(array, -1, 0).astype(np.float32) / np.float32(S2_SCALE)
    out[np.moveaxis(array, -1, 0) == S2_NODATA] = np.nan
    return out


def _three(bands: list[str], wanted: tuple[str, ...]) -> list[int]:
    """Channel indexes of ``wanted`` if all present, else the first three (or one, grey)."""
    if all(b in bands for b in wanted):
        return [bands.index(b) for b in wanted]
    return [0, 1, 2] if len(bands) >= 3 else [0, 0, 0]


def render_key(array: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """An image of one key of one sample, and ``imshow`` options.

    S2 in true colour (B04 B03 B02; other bands when those are absent), the 20 m S2
    bands as B12 B8A B05, S1 in false colour (VV, VH, VV/VH), masks with a class colour
    map, the DEM in grey; each stretched between its 2nd and 98th percentiles.
    """
    kind = spec["kind"]
    bands = list(spec["bands"])
    if kind in ("s2", "s2_20m"):
        wanted = S2_RGB if kind == "s2" else _S2_20M_SHOW
        return s2_true_colour(_reflectance(array)[_three(bands, wanted)]), {}
    if kind == "s1":
        vv, vh = linear_to_db(decode_prepared(np.moveaxis(array, -1, 0)))
        return s1_false_colour(vv, vh), {}
    if kind == "s2_mask":
        return _MASK_INDEX[array[..., 0]], {
            "cmap": _MASK_CMAP, "norm": BoundaryNorm(np.arange(-0.5, 5.5), _MASK_CMAP.N),
            "interpolation": "nearest"}
    elevation = array[..., 0].astype(np.float32)
    elevation[elevation == DEM_NODATA] = np.nan
    return stretch(elevation), {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}


def _date(meta: dict[str, Any], acquisition: str | None, kind: str) -> str:
    if acquisition is None:
        return ""
    sensor = "s1" if kind == "s1" else "s2"
    entry = meta.get("acquisitions", {}).get(acquisition, {}).get(sensor)
    return entry["acquired"][:10] if entry else ""


def preview(
    dataset: str | Path | TrainingDataset,
    out_png: str | Path,
    n: int = 8,
    split: str = "train",
    *,
    overwrite: bool = False,
    tile_inches: float = 1.6,
) -> Path:
    """Write a PNG grid of the first ``n`` samples of a split (all image keys).

    Args:
        dataset: A dataset folder or an open :class:`TrainingDataset` (its split is used).
        out_png: The PNG to write (atomically).
        n: Samples (rows).
        split: Split, when ``dataset`` is a folder.
        overwrite: Replace an existing PNG.
        tile_inches: Side of one image in the figure, inches.

    Returns:
        The PNG path.
    """
    data = dataset if isinstance(dataset, TrainingDataset) else TrainingDataset(dataset, split)
    rows = min(n, len(data))
    if rows <= 0:
        raise DatasetError(f"split {data.split!r} has no sample to preview", path=data.path)
    specs = data.manifest["keys"]
    keys = list(specs)
    figure = Figure(figsize=(tile_inches * len(keys), tile_inches * rows + 0.3), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, len(keys), squeeze=False)
    for r in range(rows):
        sample, meta = data[r], data.meta(r)
        for c, key in enumerate(keys):
            ax = axes[r][c]
            image, options = render_key(sample[key], specs[key])
            ax.imshow(image, **options)
            ax.set_xticks([])
            ax.set_yticks([])
            date = _date(meta, specs[key]["acquisition"], specs[key]["kind"])
            ax.set_title(f"{key}\n{date}" if date else key, fontsize=6)
            if c == 0:
                ax.set_ylabel(f"{meta['tile']} {meta['row']},{meta['col']}", fontsize=6)
    figure.tight_layout()
    out = Path(out_png)
    with atomic_file(out, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")
    return out
