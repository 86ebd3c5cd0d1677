"""Grid alignment against values computed by hand on small rasters."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from decloud.errors import ArgumentError, CorruptRasterError, ExtentError, GridError
from decloud.grid import Grid, RasterKind, Resampling, Window, read_on_grid, require_coverage
from decloud.windows import core_crop

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


@pytest.mark.parametrize(("width", "height", "size", "margin", "multiple"),
                         [(10, 7, 4, 0, 4), (37, 21, 16, 8, 8), (5, 5, 16, 16, 16),
                          (33, 40, 12, 6, 2)])
def test_windows_fit_a_size_multiple(width: int, height: int, size: int, margin: int,
                                     multiple: int) -> None:
    grid = grid10(width, height)
    seen = np.zeros(grid.shape, int)
    for core, padded in grid.windows(size, margin=margin, multiple=multiple):
        seen[core.row_off:core.row_off + core.height, core.col_off:core.col_off + core.width] += 1
        # Every padded window (edge ones too) is a valid model input, on the lattice
        # of the whole image padded by the margin, and holds its core plus the margin.
        assert padded.width % multiple == 0 and padded.height % multiple == 0
        assert (padded.col_off + margin) % multiple == 0
        assert (padded.row_off + margin) % multiple == 0
        where = core_crop(core, padded)
        assert (where.top, where.left) == (margin, margin)
        assert padded.width - core.width - 2 * margin < multiple
        assert padded.height - core.height - 2 * margin < multiple
    assert (seen == 1).all()


def test_windows_refuse_sizes_off_the_lattice() -> None:
    with pytest.raises(GridError, match="multiples of 8"):
        list(grid10().windows(12, margin=8, multiple=8))
    with pytest.raises(GridError, match="multiples of 8"):
        list(grid10().windows(16, margin=4, multiple=8))
    with pytest.raises(GridError, match="invalid"):
        list(grid10().windows(16, multiple=0))


def _stream(path: Path, grid: Grid, size: int, **kwargs: object) -> np.ndarray:
    """Read a raster onto a grid window by window and mosaic the windows."""
    out = np.full(grid.shape, np.nan, np.float32)
    for core, _ in grid.windows(size):
        r, c = int(core.row_off), int(core.col_off)
        out[r:r + int(core.height), c:c + int(core.width)] = read_on_grid(
            path, grid, core, **kwargs)[0]  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("resampling", [Resampling.bilinear, Resampling.cubic,
                                        Resampling.average, Resampling.nearest])
def test_reprojected_windows_equal_the_whole_warp(tmp_path: Path,
                                                  resampling: Resampling) -> None:
    # A smooth field in the neighbouring UTM zone, with a nodata hole, onto UTM 31:
    # GDAL's approximate transformer and per-chunk scale would make windows (1 px
    # wide at the edges here) differ from the whole warp.
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:60, 0:60]
    field = (1000 + 30 * np.sin(x / 5.0) * np.cos(y / 7.0)
             + rng.normal(0, 1, (60, 60))).astype(np.float32)
    field[20:24, 30:33] = -9999
    src = write(tmp_path / "z32.tif", field, 10.0, crs=CRS.from_epsg(32632), x0=128200.0,
                y0=5010120.0, nodata=-9999)
    for res in (10.0, 20.0):  # upsampling-like and downsampling-like targets
        grid = Grid(UTM31, Affine(res, 0, X0 - 20, 0, -res, Y0 - 40), round(450 / res),
                    round(450 / res))
        whole = read_on_grid(src, grid, resampling=resampling)[0]
        assert np.isfinite(whole).mean() > 0.9
        for size in (7, 16):
            np.testing.assert_array_equal(_stream(src, grid, size, resampling=resampling),
                                          whole)


# --- Fast read paths: bit-exact against a per-pixel reference -------------------------


def _reference(values: np.ndarray, nodata: float | None, k: int, row_off: int, col_off: int,
               height: int, width: int, bilinear: bool, scale: float = 1.0,
               offset: float = 0.0) -> np.ndarray:
    """Upsample by k one pixel at a time, in float32, the way GDAL's warper defines it.

    A target centre ``j`` lies at source coordinate ``u = (off + j + 0.5) / k - 0.5``;
    bilinear weights ``floor(u)`` and the next pixel (clamped to the source) by
    ``1 - w`` and ``w``, columns first; weights are renormalised over valid pixels
    when the pixels the window uses hold nodata, and a pixel whose nearest source pixel
    is nodata is nodata. Then ``value * scale + offset``.
    """
    n_rows, n_cols = values.shape
    a = values.astype(np.float32)
    miss = values == nodata if nodata is not None else np.zeros(values.shape, bool)
    a[miss] = np.nan
    one = np.float32(1)

    def axis(j: int, off: int, n: int) -> tuple[int, int, np.float32, int] | None:
        u = (off + j + 0.5) / k - 0.5
        if not -0.5 <= u <= n - 0.5:
            return None
        own = min(max(math.floor(u + 0.5), 0), n - 1)
        if not bilinear:
            return own, own, np.float32(0), own
        i0 = math.floor(u)
        return min(max(i0, 0), n - 1), min(max(i0 + 1, 0), n - 1), np.float32(u - i0), own

    rows = [axis(j, row_off, n_rows) for j in range(height)]
    cols = [axis(j, col_off, n_cols) for j in range(width)]
    used_r = [i for r in rows if r for i in r[:2]]
    used_c = [i for c in cols if c for i in c[:2]]
    out = np.full((height, width), np.nan, np.float32)
    if not used_r or not used_c:
        return out
    renorm = bool(miss[min(used_r):max(used_r) + 1, min(used_c):max(used_c) + 1].any())
    total = np.where(miss, np.float32(0), a)
    weight = (~miss).astype(np.float32)

    def interp(x: np.ndarray, r: tuple[int, int, np.float32, int],
               c: tuple[int, int, np.float32, int]) -> np.float32:
        top = x[r[0], c[0]] * (one - c[2]) + x[r[0], c[1]] * c[2]
        bottom = x[r[1], c[0]] * (one - c[2]) + x[r[1], c[1]] * c[2]
        return top * (one - r[2]) + bottom * r[2]

    with np.errstate(divide="ignore", invalid="ignore"):
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                if r is None or c is None:
                    continue
                if not bilinear:
                    value = a[r[3], c[3]]
                elif renorm:
                    value = interp(total, r, c) / interp(weight, r, c)
                    if miss[r[3], c[3]]:
                        value = np.float32(np.nan)
                else:
                    value = interp(a, r, c)
                if scale != 1.0:
                    value = value * np.float32(scale)
                if offset != 0.0:
                    value = value + np.float32(offset)
                out[i, j] = value
    return out


@pytest.fixture(params=["compiled", "numpy"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the compiled loops (decloud._kernels) and the numpy path."""
    import decloud.grid

    if request.param == "numpy":
        monkeypatch.setattr(decloud.grid, "_kernels", None)
    elif decloud.grid._kernels is None:
        pytest.skip("decloud._kernels is not built (python setup.py build_ext --inplace)")
    return str(request.param)


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize(("dtype", "nodata"), [("int16", -10000), ("uint16", 0),
                                               ("float32", -9999.0)])
@pytest.mark.parametrize("strip_bytes", [None, 700])
def test_upsampling_equals_the_per_pixel_reference_to_the_bit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int, dtype: str, nodata: float,
        strip_bytes: int | None, read_path: str) -> None:
    import decloud.grid

    if strip_bytes is not None:  # many strips per window
        monkeypatch.setattr(decloud.grid, "_STRIP_BYTES", strip_bytes)
    rng = np.random.default_rng(k)
    values = rng.integers(100, 5000, (13, 14)).astype(dtype)
    values[rng.random(values.shape) < 0.12] = nodata
    values[:, :3] = nodata  # a swath edge as well as holes
    values[:2] = nodata  # rows with no valid pixel (strips that are all nodata)
    clean = rng.integers(100, 5000, (13, 14)).astype(dtype)  # no nodata at all
    grid = grid10(14 * k, 13 * k)
    windows = [Window(-3, 5, 31, 29), Window(4, -2, 14 * k, 13 * k + 5), Window(7, 9, 2, 3)]
    for data in (values, clean):
        src_path = write(tmp_path / f"{k}{dtype}{data is clean}.tif", data, 10.0 * k,
                         nodata=nodata)
        with rasterio.open(src_path) as src:
            for window in windows:
                for method, bilinear in ((Resampling.bilinear, True),
                                         (Resampling.nearest, False)):
                    got = read_on_grid(src, grid, window, resampling=method, scale=1e-4,
                                       offset=-0.1)[0]
                    want = _reference(data, nodata, k, int(window.row_off),
                                      int(window.col_off), int(window.height),
                                      int(window.width), bilinear, 1e-4, -0.1)
                    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_upsampled_windows_equal_the_whole_read_to_the_bit(tmp_path: Path) -> None:
    # int16 at 20 m with holes and a swath edge (the k = 2 exact path and its border
    # fix-up), read whole and in windows of several sizes: streamed equals whole.
    rng = np.random.default_rng(4)
    values = rng.integers(-500, 9000, (40, 44)).astype(np.int16)
    values[rng.random(values.shape) < 0.05] = -10000
    values[np.arange(40)[:, None] > np.arange(44)[None, :] // 2 + 20] = -10000
    src = write(tmp_path / "edge.tif", values, 20.0, nodata=-10000)
    grid = grid10(88, 80)
    whole = read_on_grid(src, grid, scale=1e-4)[0]
    assert np.isnan(whole).any() and np.isfinite(whole).mean() > 0.5
    for size in (5, 16, 33):
        out = np.full(grid.shape, -1.0, np.float32)
        for core, _ in grid.windows(size):
            r, c = int(core.row_off), int(core.col_off)
            out[r:r + int(core.height), c:c + int(core.width)] = read_on_grid(
                src, grid, core, scale=1e-4)[0]
        np.testing.assert_array_equal(out.view(np.uint32), whole.view(np.uint32))


def test_read_into_a_view_of_a_larger_array(tmp_path: Path) -> None:
    values = np.arange(100, 164, dtype=np.int16).reshape(8, 8)
    values[2, 3] = -10000
    src20 = write(tmp_path / "v20.tif", values, 20.0, nodata=-10000)
    src10 = write(tmp_path / "v10.tif", values, 10.0, nodata=-10000)
    for src, grid in ((src20, grid10(16, 16)), (src10, grid10(8, 8))):
        window = Window(-2, 1, 9, 7)
        expected = read_on_grid(src, grid, window)
        big = np.full((3, 10, 12), 7.0, np.float32)
        view = big[1:2, 2:9, 1:10]
        assert read_on_grid(src, grid, window, out=view) is view
        np.testing.assert_array_equal(view, expected)
        big[1:2, 2:9, 1:10] = 7.0
        assert (big == 7.0).all()  # nothing written outside the view
    with pytest.raises(ArgumentError, match="out"):
        read_on_grid(src10, grid10(8, 8), out=np.empty((1, 8, 7), np.float32))
    with pytest.raises(ArgumentError, match="out"):
        read_on_grid(src10, grid10(8, 8), out=np.empty((1, 8, 8), np.float64))
    with pytest.raises(ArgumentError, match="scale"):
        read_on_grid(src10, grid10(8, 8), kind=RasterKind.MASK, scale=2.0)


def test_nodata_is_compared_in_the_source_type(tmp_path: Path) -> None:
    values = np.array([[0, 1, 65535, 40000]], np.uint16)
    src = write(tmp_path / "u16.tif", values, 10.0)
    grid = grid10(4, 1)
    # 0 and 65535 are uint16 values; -1 and 1.5 are not, so nothing is nodata.
    assert np.isnan(read_on_grid(src, grid, src_nodata=0)[0]).tolist() == [[True, False,
                                                                            False, False]]
    assert np.isnan(read_on_grid(src, grid, src_nodata=65535)[0])[0, 2]
    for never in (-1, 1.5, 70000, float("nan")):
        assert not np.isnan(read_on_grid(src, grid, src_nodata=never)).any()
    floats = write(tmp_path / "f32.tif", np.array([[0.1, -9999.0]], np.float32), 10.0)
    got = read_on_grid(floats, grid10(2, 1), src_nodata=-9999.0)[0]
    assert got[0, 0] == np.float32(0.1) and np.isnan(got[0, 1])


def test_scale_and_offset_equal_a_separate_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.integers(1, 12000, (9, 9)).astype(np.uint16)
    values[4, 4] = 0
    for res, grid in ((10.0, grid10(9, 9)), (20.0, grid10(18, 18)), (30.0, grid10(27, 27))):
        src = write(tmp_path / f"s{res}.tif", values, res, nodata=0)
        plain = read_on_grid(src, grid)
        expected = plain * np.float32(1e-4) + np.float32(-0.1)
        got = read_on_grid(src, grid, scale=1e-4, offset=-0.1)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    # A float32 source is decoded in place: nodata is found before the scaling.
    floats = values.astype(np.float32) * np.float32(0.5)
    floats[4, 4] = -9999.0
    src = write(tmp_path / "f.tif", floats, 10.0, nodata=-9999.0)
    expected = read_on_grid(src, grid10(9, 9)) * np.float32(2.0) + np.float32(1.0)
    got = read_on_grid(src, grid10(9, 9), scale=2.0, offset=1.0)
    assert np.isnan(got[0, 4, 4]) and np.isnan(got).sum() == 1
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize(("dtype", "nodata"), [("int16", -10000), ("uint16", 0)])
@pytest.mark.parametrize(("scale", "offset"), [(1e-4, 0.0), (1.0, 0.0), (1e-4, -0.1),
                                               (2.5e-5, 0.0)])
def test_compiled_reads_equal_the_numpy_path_to_the_bit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dtype: str, nodata: int,
        scale: float, offset: float) -> None:
    """decloud._kernels (one pass per pixel) against numpy's passes, on realistic windows.

    A 20 m and a 10 m band of 16-bit DN with a slanted swath edge, scattered nodata and
    a nodata block, read onto windows with even and odd offsets, past every edge, with
    several scales and offsets (including those the numpy path skips: x 1, + 0).
    """
    import decloud.grid

    if decloud.grid._kernels is None:
        pytest.skip("decloud._kernels is not built (python setup.py build_ext --inplace)")
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    paths = {}
    for res, size in ((20.0, 60), (10.0, 120)):
        values = rng.integers(max(info.min, -3000), 12000, (size, size)).astype(dtype)
        cols = np.arange(size)[None, :]
        values[cols < (0.3 - 0.2 * np.arange(size)[:, None] / size) * size] = nodata
        values[rng.random(values.shape) < 0.05] = nodata
        values[size // 2 : size // 2 + 7, size // 3 : size // 3 + 9] = nodata
        paths[res] = write(tmp_path / f"{res}.tif", values, res, nodata=nodata)
    grid = grid10(120, 120)
    windows = [grid.full_window(), Window(0, 0, 64, 64), Window(33, 17, 50, 61),
               Window(-5, -3, 40, 40), Window(101, 90, 30, 45), Window(7, 64, 1, 9)]
    for res, path in paths.items():
        with rasterio.open(path) as src:
            for window in windows:
                got = read_on_grid(src, grid, window, scale=scale, offset=offset)
                with monkeypatch.context() as m:
                    m.setattr(decloud.grid, "_kernels", None)
                    want = read_on_grid(src, grid, window, scale=scale, offset=offset)
                if window == grid.full_window():  # the data has both, as meant
                    assert np.isnan(got).any() and not np.isnan(got).all()
                np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                              err_msg=f"{res} m, {window}")


def test_subgrid_transform_is_rasterios_to_the_bit() -> None:
    rng = np.random.default_rng(3)
    grids = [grid10(100, 100),
             Grid(UTM31, Affine(20.0, 0, 399960.0, 0, -20.0, 5000040.0), 5, 5),
             Grid(UTM31, Affine(0.3, 0, -1e5 / 3, 0, -0.3, 7e6 / 3), 9, 9)]
    for grid in grids:
        for _ in range(200):
            window = Window(int(rng.integers(-5000, 5000)), int(rng.integers(-5000, 5000)),
                            int(rng.integers(1, 600)), int(rng.integers(1, 600)))
            want = rasterio.windows.transform(window, grid.transform)
            got = grid.subgrid(window).transform
            assert tuple(got) == tuple(want), window
