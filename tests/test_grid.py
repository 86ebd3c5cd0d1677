"""Grid alignment against values computed by hand on small rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from decloud.errors import CorruptRasterError, ExtentError, GridError
from decloud.grid import Grid, RasterKind, Resampling, Window, read_on_grid, require_coverage

UTM31 = CRS.from_epsg(32631)
X0, Y0 = 600000.0, 5000000.0


def write(path: Path, data: np.ndarray, res: float, *, crs: CRS = UTM31, x0: float = X0,
          y0: float = Y0, nodata: float | None = None) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, nodata=nodata,
                       transform=Affine(res, 0, x0, 0, -res, y0)) as dst:
        dst.write(data)
    return path


def grid10(width: int = 8, height: int = 8) -> Grid:
    return Grid(UTM31, Affine(10, 0, X0, 0, -10, Y0), width, height)


def test_grid_invariants() -> None:
    grid = grid10()
    assert grid.bounds == (X0, Y0 - 80, X0 + 80, Y0)
    assert grid.at_resolution(20).shape == (4, 4)
    assert grid.at_resolution(60).shape == (2, 2)  # ceil: a partial 60 m pixel counts
    with pytest.raises(GridError, match="square"):
        Grid(UTM31, Affine(10, 0, X0, 0, -20, Y0), 4, 4)
    with pytest.raises(GridError, match="rotated"):
        Grid(UTM31, Affine(10, 1, X0, 0, -10, Y0), 4, 4)


def test_windows_cover_grid_once() -> None:
    grid = grid10(10, 7)
    seen = np.zeros(grid.shape, int)
    for core, padded in grid.windows(4, margin=2):
        seen[core.row_off:core.row_off + core.height, core.col_off:core.col_off + core.width] += 1
        assert padded.width == core.width + 4 and padded.col_off == core.col_off - 2
    assert (seen == 1).all()


def test_20m_ramp_bilinear_onto_10m(tmp_path: Path) -> None:
    # 20 m pixel centres at x = 10, 30, 50, 70 m from the corner; value = that x.
    centres = np.array([10.0, 30.0, 50.0, 70.0], np.float32)
    src = write(tmp_path / "ramp.tif", np.tile(centres, (4, 1)), 20.0)
    out = read_on_grid(src, grid10(), kind=RasterKind.REFLECTANCE)[0]
    # A bilinear interpolation of a linear function is exact between source centres:
    # the 10 m centres at x = 15, 25, ..., 65 get exactly those values.
    np.testing.assert_allclose(out[3, 1:7], [15, 25, 35, 45, 55, 65], atol=1e-4)


def test_20m_mask_nearest_onto_10m(tmp_path: Path) -> None:
    mask = np.array([[1, 2], [3, 4]], np.uint8)
    src = write(tmp_path / "mask.tif", mask, 20.0)
    out = read_on_grid(src, grid10(4, 4), kind=RasterKind.MASK)[0]
    np.testing.assert_array_equal(out, np.kron(mask, np.ones((2, 2), np.uint8)))


def test_half_pixel_shift_averages_neighbours(tmp_path: Path) -> None:
    values = np.arange(16, dtype=np.float32).reshape(4, 4) * 4
    # Source shifted 5 m east: a target pixel centre falls halfway between two sources.
    src = write(tmp_path / "shift.tif", values, 10.0, x0=X0 + 5)
    out = read_on_grid(src, grid10(5, 4), kind=RasterKind.ELEVATION)[0]
    np.testing.assert_allclose(out[:, 1:4], (values[:, :3] + values[:, 1:]) / 2, atol=1e-4)


def test_other_crs_is_reprojected(tmp_path: Path) -> None:
    # The same UTM projection with a false easting 100 km larger: a pure translation.
    shifted = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=3 +k=0.9996 +x_0=600000 +y_0=0 "
                             "+datum=WGS84 +units=m +no_defs")
    values = np.arange(36, dtype=np.uint8).reshape(6, 6)
    src = write(tmp_path / "other.tif", values, 10.0, crs=shifted, x0=X0 + 100000 - 10)
    out = read_on_grid(src, grid10(4, 4), kind=RasterKind.MASK, fill=255)[0]
    # Target column 0 is source column 1: the source starts one pixel further west.
    np.testing.assert_array_equal(out, values[:4, 1:5])


def test_nodata_propagates_and_outside_is_nan(tmp_path: Path) -> None:
    values = np.full((4, 4), 100, np.int16)
    values[0, 0] = -10000
    src = write(tmp_path / "nd.tif", values, 10.0, nodata=-10000)
    out = read_on_grid(src, grid10(6, 6), Window(-1, -1, 6, 6))[0]
    assert np.isnan(out[0]).all() and np.isnan(out[:, 0]).all()  # outside the source
    assert np.isnan(out[1, 1])  # the nodata pixel
    assert (out[2:5, 2:5] == 100).all()
    # Through the warper (20 m onto 10 m), a 20 m nodata pixel stays nodata.
    src20 = write(tmp_path / "nd20.tif", values, 20.0, nodata=-10000)
    out20 = read_on_grid(src20, grid10(8, 8), resampling=Resampling.nearest)[0]
    assert np.isnan(out20[:2, :2]).all() and (out20[2:, 2:] == 100).all()


def test_windows_are_seamless(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = write(tmp_path / "r.tif", rng.random((9, 9), dtype=np.float32), 20.0)
    grid = grid10(18, 18)
    whole = read_on_grid(src, grid)[0]
    pieces = np.full(grid.shape, np.nan, np.float32)
    for core, _ in grid.windows(5):
        r, c = int(core.row_off), int(core.col_off)
        pieces[r:r + core.height, c:c + core.width] = read_on_grid(src, grid, core)[0]
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_coverage_and_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(ExtentError, match="covers"):
        require_coverage((X0, Y0 - 40, X0 + 40, Y0), UTM31, grid10(), path="dem.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(CorruptRasterError, match=r"bad\.tif"):
        read_on_grid(bad, grid10())


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.nearest])
def test_fast_upsampling_matches_gdal_warper(resampling: Resampling) -> None:
    from decloud.grid import _read_warped
    from decloud.products import open_product
    from tests.conftest import SAFE_PB0400

    product = open_product(SAFE_PB0400)
    grid = product.grid()
    window = Window(-5, 7, 100, 90)  # off the edge, odd offsets
    with rasterio.open(product.band("B11").path) as src:
        fast = read_on_grid(src, grid, window, resampling=resampling, src_nodata=0)
        slow = _read_warped(src, grid.subgrid(window), (1,), RasterKind.REFLECTANCE,
                            resampling, 0, 0)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-3)


def test_fast_upsampling_keeps_interior_holes_like_gdal(tmp_path: Path) -> None:
    from decloud.grid import _read_warped

    rng = np.random.default_rng(1)
    values = rng.integers(100, 5000, (30, 30)).astype(np.int16)
    values[rng.random((30, 30)) < 0.15] = -10000
    src_path = write(tmp_path / "holes.tif", values, 20.0, nodata=-10000)
    grid = grid10(60, 60)
    window = Window(-3, 5, 50, 57)
    with rasterio.open(src_path) as src:
        fast = read_on_grid(src, grid, window)
        slow = _read_warped(src, grid.subgrid(window), (1,), RasterKind.REFLECTANCE,
                            Resampling.bilinear, -10000, 0)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-2)


def test_gdal_env_keeps_a_real_block_cache() -> None:
    from decloud.env import gdal_env

    with gdal_env():
        assert rasterio.env.get_gdal_config("GDAL_CACHEMAX") > 64 * 2**20  # bytes
