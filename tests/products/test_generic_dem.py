"""Generic stacks with sidecars (and the computed mask), and DEMs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from decloud.errors import DemCoverageError, ProductFormatError
from decloud.grid import Grid
from decloud.products import Dem, GenericStack, open_product
from tests.conftest import DEM, SAFE_PB0400, THEIA_CLEAR


def make_stack(tmp_path: Path, **sidecar: object) -> Path:
    theia = open_product(THEIA_CLEAR)
    bands = ["B02", "B03", "B04", "B08", "B11"]
    grid = theia.grid()
    data = np.rint(theia.read(bands) * 10000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height,
                       count=len(bands), dtype="uint16", crs=grid.crs,
                       transform=grid.transform, nodata=0) as dst:
        dst.write(data)
    spec = {"platform": "S2A", "tile": "T33TVM", "acquired": "2015-07-11T10:00:08Z",
            "bands": bands, **sidecar}
    path.with_suffix(".yaml").write_text(yaml.safe_dump(spec))
    return path


def test_stack_with_sidecar_and_computed_mask(tmp_path: Path) -> None:
    stack = open_product(make_stack(tmp_path))
    assert isinstance(stack, GenericStack)
    assert stack.mask_origin == "computed"
    reference = open_product(THEIA_CLEAR).read(["B03"])
    np.testing.assert_allclose(stack.read(["B03"]), reference, atol=1e-4)
    assert stack.cover()["cloud"] < 0.05  # a clear date stays clear


def test_stack_with_mask_raster(tmp_path: Path) -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[:10] = 7
    mask_path = tmp_path / "m.tif"
    grid = open_product(THEIA_CLEAR).grid()
    with rasterio.open(mask_path, "w", driver="GTiff", width=100, height=100, count=1,
                       dtype="uint8", crs=grid.crs, transform=grid.transform) as dst:
        dst.write(mask, 1)
    stack = open_product(make_stack(tmp_path, mask={"path": "m.tif", "cloud": [7]}))
    assert stack.mask_origin == "mask"
    assert stack.cover(resolution=10.0)["cloud"] == pytest.approx(0.1)


def test_sidecar_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ProductFormatError, match=r"\[bands.*unknown S2 band") as err:
        open_product(make_stack(tmp_path, bands=["B02", "B03", "B04", "B08", "B99"]))
    assert "stack.yaml" in str(err.value)
    with pytest.raises(ProductFormatError, match="names 3 band"):
        open_product(make_stack(tmp_path, bands=["B02", "B03", "B04"]))


def test_dem_in_lonlat_onto_utm_grid() -> None:
    dem = Dem.open(DEM)
    assert dem.tile == "T33TVM"
    grid = open_product(THEIA_CLEAR).grid()
    elevation = dem.read(grid)
    assert elevation.shape == (100, 100) and not np.isnan(elevation).any()
    assert 600 < float(elevation.mean()) < 900  # hills west of Ljubljana


def test_dem_not_covering_the_grid() -> None:
    other = open_product(SAFE_PB0400).grid()  # Ireland
    with pytest.raises(DemCoverageError, match=r"T33TVM\.tif"):
        Dem.open(DEM).read(other)
    shifted = Grid(open_product(THEIA_CLEAR).grid().crs,
                   open_product(THEIA_CLEAR).grid().transform, 300, 300)
    with pytest.raises(DemCoverageError, match="covers"):
        Dem.open(DEM).read(shifted)
