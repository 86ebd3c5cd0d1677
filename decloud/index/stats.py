"""Per-patch statistics of products: cloud, shadow and nodata percentages.

A tile's 10 m grid is cut into elementary patches (64 x 64 px by default). For every
S2 product each patch gets the percentage of cloud (clouds and cirrus), shadow and
nodata pixels; for every S1 image, the percentage of nodata. Masks are read on the
tile's 20 m grid (a 64 px patch is 32 x 32 mask pixels) in strips of patch rows, so a
full tile is never held in memory. Percentages are stored as uint8 (0..100).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from decloud.constants import MaskClass
from decloud.env import ensure_env
from decloud.errors import GridError
from decloud.grid import Grid, RasterPool
from decloud.products import S1Product, S2Product

__all__ = ["STATS_RESOLUTION", "PatchGrid", "s1_patch_stats", "s2_patch_stats"]

#: Resolution at which masks are read for statistics, metres.
STATS_RESOLUTION = 20.0
# Patch rows read at once: bounds memory to a strip of the tile.
_STRIP_PATCH_ROWS = 8


@dataclass(frozen=True)
class PatchGrid:
    """Elementary patches of a tile grid.

    Attributes:
        grid: The tile's 10 m grid.
        patch_size: Patch side in 10 m pixels.
    """

    grid: Grid
    patch_size: int = 64

    def __post_init__(self) -> None:
        factor = self.grid.resolution / STATS_RESOLUTION
        cells = self.patch_size * factor
        if self.patch_size <= 0 or abs(cells - round(cells)) > 1e-9 or cells < 1:
            raise GridError(f"patch size {self.patch_size} px at {self.grid.resolution} m is "
                            f"not a whole number of {STATS_RESOLUTION:g} m mask pixels",
                            field="patch_size")

    @property
    def rows(self) -> int:
        """Patch rows (the last may be partial)."""
        return math.ceil(self.grid.height / self.patch_size)

    @property
    def cols(self) -> int:
        """Patch columns (the last may be partial)."""
        return math.ceil(self.grid.width / self.patch_size)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.rows, self.cols

    @property
    def cells(self) -> int:
        """Patch side in mask pixels."""
        return round(self.patch_size * self.grid.resolution / STATS_RESOLUTION)

    def mask_grid(self) -> Grid:
        """The 20 m grid masks are read on."""
        return self.grid.at_resolution(STATS_RESOLUTION)

    def window(self, row: int, col: int, size: int | None = None) -> Window:
        """The 10 m window of a patch (or of a ``size`` px window centred on it)."""
        size = size or self.patch_size
        offset = (self.patch_size - size) // 2
        return Window(col * self.patch_size + offset, row * self.patch_size + offset, size, size)

    def strips(self, strip_rows: int = _STRIP_PATCH_ROWS) -> Iterator[tuple[int, Window]]:
        """(first patch row, 20 m mask window) for strips of ``strip_rows`` patch rows.

        The windows stay inside the mask grid (partial last patches are padded by the
        callers), so a mask computed with context (:mod:`decloud.masks`) sees the same
        image edges as a whole-grid read and the statistics do not depend on the
        strip height.
        """
        if strip_rows < 1:
            raise GridError(f"strips of {strip_rows} patch rows", field="strip_rows")
        mask_grid = self.mask_grid()
        step = strip_rows * self.cells
        width = min(self.cols * self.cells, mask_grid.width)
        for row0 in range(0, self.rows, strip_rows):
            top = row0 * self.cells
            yield row0, Window(0, top, width, min(step, mask_grid.height - top))


def _padded(window: Window, patches: PatchGrid) -> tuple[int, int]:
    """Shape of a strip padded to whole patches."""
    return math.ceil(window.height / patches.cells) * patches.cells, patches.cols * patches.cells


def _count(hits: np.ndarray, cells: int) -> np.ndarray:
    """Hits per patch of a strip padded to whole patches, int32."""
    rows, cols = hits.shape[0] // cells, hits.shape[1] // cells
    return hits.view(np.uint8).reshape(rows, cells, cols, cells).sum(axis=(1, 3),
                                                                    dtype=np.int32)


def _percent(count: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Rounded percentage as uint8, 0 where the total is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(total > 0, np.rint(100.0 * count / np.maximum(total, 1)), 0)
    return pct.astype(np.uint8)


@ensure_env
def s2_patch_stats(
    product: S2Product, patches: PatchGrid, *, pool: RasterPool | None = None,
    strip_rows: int = _STRIP_PATCH_ROWS,
) -> dict[str, np.ndarray]:
    """Cloud, shadow and nodata percentages of an S2 product per patch.

    Cloud and shadow are percentages of the patch's valid pixels; nodata of all its
    pixels (pixels outside the product, or past the grid's edge in partial last
    patches, count as nodata). The mask is read in strips of ``strip_rows`` patch
    rows; the result is the same for any strip height (it equals counting on the
    whole grid's mask).

    Returns:
        ``{"cloud", "shadow", "nodata"}`` uint8 arrays of shape ``patches.shape``.
    """
    mask_grid = patches.mask_grid()
    out = {k: np.zeros(patches.shape, np.uint8) for k in ("cloud", "shadow", "nodata")}
    with nullcontext(pool) if pool is not None else RasterPool() as files:
        for row0, window in patches.strips(strip_rows):
            layer = product.mask(mask_grid, window, pool=files)
            # Pixels past the grid's edge (partial last patches) are nodata too.
            full = np.full(_padded(window, patches), MaskClass.NODATA, np.uint8)
            full[: layer.shape[0], : layer.shape[1]] = layer
            rows = slice(row0, row0 + full.shape[0] // patches.cells)
            area = patches.cells * patches.cells
            nodata = _count(full == MaskClass.NODATA, patches.cells)
            valid = area - nodata
            out["nodata"][rows] = _percent(nodata, np.full_like(nodata, area))
            # Cloud and cirrus are classes 1 and 2: one unsigned comparison finds both.
            cloud = _count((full - np.uint8(1)) < 2, patches.cells)
            out["cloud"][rows] = _percent(cloud, valid)
            shadow = _count(full == MaskClass.SHADOW, patches.cells)
            out["shadow"][rows] = _percent(shadow, valid)
    return out


@ensure_env
def s1_patch_stats(
    image: S1Product, patches: PatchGrid, *, pool: RasterPool | None = None,
    strip_rows: int = _STRIP_PATCH_ROWS,
) -> dict[str, np.ndarray]:
    """Nodata percentage of an S1 image per patch of a tile grid (strips as for S2).

    Returns:
        ``{"nodata"}`` uint8 array of shape ``patches.shape``.
    """
    mask_grid = patches.mask_grid()
    out = np.zeros(patches.shape, np.uint8)
    band = "VV" if "VV" in image.bands else image.band_names[0]
    with nullcontext(pool) if pool is not None else RasterPool() as files:
        for row0, window in patches.strips(strip_rows):
            # Nearest keeps this a pure validity test (no interpolation across nodata).
            data = image.read([band], mask_grid, window, pool=files, unit="linear",
                              resampling=Resampling.nearest)[0]
            full = np.ones(_padded(window, patches), dtype=bool)
            full[: data.shape[0], : data.shape[1]] = ~(data > 0)
            rows = slice(row0, row0 + full.shape[0] // patches.cells)
            area = patches.cells * patches.cells
            nodata = _count(full, patches.cells)
            out[rows] = _percent(nodata, np.full_like(nodata, area))
    return {"nodata": out}
