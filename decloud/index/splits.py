"""Dataset splits of patch positions: by vector ROIs, or by random blocks with a buffer.

A split map is an int16 array over patch positions: the index of the split a
position belongs to, or -1 (unused: outside every ROI, or in a buffer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from rasterio.warp import transform_geom
from scipy import ndimage
from shapely import box, covers, from_wkb, prepare
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from decloud.errors import DecloudError
from decloud.index.stats import PatchGrid

__all__ = ["block_splits", "read_roi", "roi_splits"]


def block_splits(
    shape_rc: tuple[int, int],
    fractions: Mapping[str, float],
    *,
    block: int = 8,
    buffer: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Assign blocks of ``block`` x ``block`` patch positions to named splits at random.

    Positions within ``buffer`` positions of a block of another split are dropped
    (-1), so no two splits touch.

    Args:
        shape_rc: Patch grid shape (rows, cols).
        fractions: Split names and their share of blocks (normalised).
        block: Block side in patch positions.
        buffer: Positions dropped along borders between splits.
        seed: Seed of the assignment.

    Returns:
        The split map and the split names (index = value in the map).
    """
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise DecloudError(f"invalid split fractions {dict(fractions)}", field="splits")
    if block <= 0 or buffer < 0:
        raise DecloudError(f"invalid block {block} or buffer {buffer}", field="splits")
    names = list(fractions)
    share = np.array([fractions[n] for n in names], np.float64)
    rows, cols = shape_rc
    brows, bcols = -(-rows // block), -(-cols // block)
    rng = np.random.default_rng(seed)
    # Exact proportions over the blocks, in a random order.
    counts = np.floor(share / share.sum() * brows * bcols).astype(int)
    counts[np.argmax(share)] += brows * bcols - counts.sum()
    labels = rng.permutation(np.repeat(np.arange(len(names)), counts)).reshape(brows, bcols)
    split = np.kron(labels, np.ones((block, block), int))[:rows, :cols].astype(np.int16)
    if buffer:
        # 8-connected: diagonal neighbours touch too.
        square = np.ones((3, 3), bool)
        for k in range(len(names)):
            others = ndimage.binary_dilation((split != k) & (split >= 0), structure=square,
                                             iterations=buffer)
            split[(split == k) & others] = -1
    return split, names


def read_roi(path: Path) -> tuple[BaseGeometry, str]:
    """The union of the polygons of a GeoJSON or GeoPackage file, and their CRS."""
    path = Path(path)
    if not path.is_file():
        raise DecloudError("ROI file not found", path=path)
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DecloudError(f"invalid GeoJSON ({err})", path=path) from err
        features = data.get("features", [data]) if isinstance(data, dict) else []
        geoms = [shape(f.get("geometry", f)) for f in features]
        crs = (data.get("crs", {}) or {}).get("properties", {}).get("name", "EPSG:4326")
    else:
        import pyogrio
        from pyogrio.errors import DataSourceError

        try:
            meta, _, geometry, _ = pyogrio.raw.read(path)
        except DataSourceError as err:
            raise DecloudError(f"cannot read vector file ({err})", path=path) from err
        geoms = list(from_wkb(geometry))
        crs = meta.get("crs") or "EPSG:4326"
    geoms = [g for g in geoms if g is not None and not g.is_empty]
    if not geoms:
        raise DecloudError("no geometry", path=path)
    return unary_union(geoms), crs


def roi_splits(patches: PatchGrid, rois: Mapping[str, Path]) -> tuple[np.ndarray, list[str]]:
    """Positions whose patch lies wholly inside a split's ROI belong to that split.

    Positions inside several ROIs are dropped (-1): splits never share a patch.
    """
    names = list(rois)
    rows, cols = patches.shape
    size = patches.patch_size * patches.grid.resolution
    left, top = patches.grid.transform.c, patches.grid.transform.f
    cols_c, rows_c = np.meshgrid(np.arange(cols), np.arange(rows))
    x0, y1 = left + cols_c * size, top - rows_c * size
    boxes = box(x0, y1 - size, x0 + size, y1)
    split = np.full((rows, cols), -1, np.int16)
    hits = np.zeros((rows, cols), np.int16)
    for k, name in enumerate(names):
        geom, crs = read_roi(Path(rois[name]))
        local = shape(transform_geom(crs, patches.grid.crs, mapping(geom)))
        # A patch belongs to the split when the ROI covers its whole square.
        prepare(local)
        inside = covers(local, boxes)
        split[inside] = k
        hits += inside
    split[hits > 1] = -1
    return split, names
