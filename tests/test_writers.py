"""COG writer and atomic outputs: valid COGs, tags, nothing half-written or overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from decloud.errors import OutputExistsError
from decloud.grid import Grid
from decloud.quicklook import s1_false_colour, s2_true_colour, stretch, write_png
from decloud.writers import CogWriter, atomic_dir, provenance_tags
from tests.conftest import leftovers

GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5000000), 1100, 900)


def test_cog_with_overviews_tags_and_descriptions(tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    data = np.arange(2 * 900 * 1100, dtype=np.int32).reshape(2, 900, 1100) % 3000
    tags = provenance_tags(["a.tif"], ["2020-01-01"], key="s2")
    with CogWriter(path, GRID, 2, "int16", -10000, band_names=["B02", "B03"],
                   tags=tags) as writer:
        for core, _ in GRID.windows(512):
            r, c = int(core.row_off), int(core.col_off)
            writer.write(data[:, r:r + core.height, c:c + core.width], core)
    with rasterio.open(path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.descriptions == ("B02", "B03") and src.nodata == -10000
        assert src.overviews(1) and src.profile["tiled"]
        assert src.tags()["DECLOUD_INPUTS"] == '["a.tif"]' and src.tags()["DECLOUD_KEY"] == "s2"
        np.testing.assert_array_equal(src.read(), data)
    assert leftovers(tmp_path) == [path]


def test_failure_leaves_nothing_and_existing_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), CogWriter(path, GRID, 1, "uint8", 0) as writer:
        writer.write(np.zeros((1, 900, 1100), np.uint8))
        raise RuntimeError("interrupted")
    assert leftovers(tmp_path) == []
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"out\.tif"):
        CogWriter(path, GRID, 1, "uint8", 0).__enter__()
    assert path.read_bytes() == b"precious"


def test_atomic_dir(tmp_path: Path) -> None:
    target = tmp_path / "stack"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.tif").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert leftovers(tmp_path) == []
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(OutputExistsError):
        atomic_dir(target).__enter__()
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in leftovers(tmp_path)] == ["b"]


def test_quicklooks(tmp_path: Path) -> None:
    band = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    band[0, 0] = np.nan
    stretched = stretch(band)
    assert stretched[0, 0] == 0 and stretched.max() == 1 and stretched.min() == 0
    rgb = s2_true_colour(np.stack([band, band, band]))
    assert rgb.shape == (10, 10, 3) and (rgb[0, 0] == 0).all()
    false = s1_false_colour(band * -20, band * -25)
    assert false.dtype == np.uint8
    png = write_png(tmp_path / "q.png", rgb)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        write_png(png, rgb)
