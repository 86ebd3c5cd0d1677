"""Streamed equals whole: everything computed window by window equals the whole result.

The contract of issue 7 for every stage an engine streams: the computed cloud mask,
the products' masks, patch statistics, the reprojected DEM, and a model's block-wise
prediction with the halo of its spec. Each test mosaics windows (edge windows
included, sizes that do not divide the image) and compares with one whole-image
computation; where the result has an independent reference (the DEM, through PROJ and
a bilinear interpolation in scipy), it is checked against it too. (The input
reader's windowed == whole test lives with the reader.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.windows import Window
from scipy import ndimage

from decloud.constants import MaskClass
from decloud.grid import Grid, RasterPool
from decloud.index.stats import PatchGrid, s1_patch_stats, s2_patch_stats
from decloud.masks import FALLBACK_BANDS, FallbackThresholds, cloud_shadow, compute_mask
from decloud.products import Dem, S2Product, open_product
from decloud.windows import core_crop, crop, pad_to_multiple
from tests.conftest import ARCHIVE, DEM, S1_VV, SAFE_PB0400, THEIA

THEIA_TILE = ARCHIVE / "S2" / "T33TVM"
#: Partly cloudy (1216 computed cloud pixels of 10000) and overcast dates.
THEIA_PARTLY = THEIA_TILE / "SENTINEL2A_20150731-100009-000_L2A_T33TVM_D_V1-8"
THEIA_OVERCAST = THEIA_TILE / "SENTINEL2A_20150820-100728-000_L2A_T33TVM_D_V1-8"
#: Window sides: 1 px edge windows, sizes that do not divide 100 or 120, and larger.
SIZES = (7, 32, 33)


def bare(path: Path) -> S2Product:
    """The product without its mask layers, so that its mask is the computed one."""
    product = open_product(path)
    assert isinstance(product, S2Product)
    return dataclasses.replace(product, masks={})


def mosaic(grid: Grid, size: int, read: Callable[[Window], np.ndarray],
           dtype: type = np.float32) -> np.ndarray:
    """Mosaic of ``read(core)`` over ``grid.windows(size)``."""
    out = np.zeros(grid.shape, dtype)
    for core, _ in grid.windows(size):
        r, c = int(core.row_off), int(core.col_off)
        out[r:r + int(core.height), c:c + int(core.width)] = read(core)
    return out


def random_windows(grid: Grid, n: int, seed: int = 0) -> Iterator[Window]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        r, c = int(rng.integers(0, grid.height - h + 1)), int(rng.integers(0, grid.width - w + 1))
        yield Window(c, r, w, h)


# --- the computed cloud/shadow mask ------------------------------------------------

@pytest.mark.parametrize("path", [THEIA_PARTLY, THEIA_OVERCAST, THEIA, SAFE_PB0400],
                         ids=["partly", "overcast", "swath-edge", "safe"])
@pytest.mark.parametrize("resolution", [10.0, 20.0])
def test_computed_mask_windows_equal_whole(path: Path, resolution: float) -> None:
    product = bare(path)
    grid = product.grid(resolution)
    with RasterPool() as pool:
        whole = compute_mask(product, grid, pool=pool)
        for size in SIZES:
            streamed = mosaic(grid, size, lambda w: compute_mask(product, grid, w, pool=pool),
                              np.uint8)
            np.testing.assert_array_equal(streamed, whole, err_msg=f"windows of {size}")
        for window in random_windows(grid, 10):
            np.testing.assert_array_equal(compute_mask(product, grid, window, pool=pool),
                                          whole[window.toslices()])


def test_the_fixtures_need_the_margin() -> None:
    """Without the margin, windows differ: the fixtures exercise the filters' context."""
    product = bare(THEIA_PARTLY)
    grid = product.grid()
    assert FallbackThresholds().margin == 3  # smooth 5 -> 2, dilate 1 -> 1
    whole = compute_mask(product, grid)
    assert np.count_nonzero(whole == MaskClass.CLOUD) > 1000

    def no_margin(window: Window) -> np.ndarray:
        bands = dict(zip(FALLBACK_BANDS, product.read(FALLBACK_BANDS, grid, window),
                         strict=True))
        return cloud_shadow(bands)[0]

    streamed = mosaic(grid, 32, no_margin, bool)
    assert np.count_nonzero(streamed != (whole == MaskClass.CLOUD)) > 0


def test_margin_follows_the_thresholds() -> None:
    assert FallbackThresholds(smooth=1, dilate=0).margin == 0
    assert FallbackThresholds(smooth=9, dilate=2).margin == 6
    # Wider filters: still equal, because the margin grows with them.
    product = bare(THEIA_PARTLY)
    grid = product.grid()
    thresholds = FallbackThresholds(smooth=9, dilate=2)
    whole = compute_mask(product, grid, thresholds=thresholds)
    streamed = mosaic(grid, 16, lambda w: compute_mask(product, grid, w,
                                                       thresholds=thresholds), np.uint8)
    np.testing.assert_array_equal(streamed, whole)


# --- the products' masks -----------------------------------------------------------

@pytest.mark.parametrize("path", [THEIA, THEIA_PARTLY, SAFE_PB0400], ids=["clm", "clm2", "scl"])
@pytest.mark.parametrize("computed", [False, True], ids=["product", "computed"])
@pytest.mark.parametrize("resolution", [10.0, 20.0])
def test_product_masks_windows_equal_whole(path: Path, computed: bool,
                                           resolution: float) -> None:
    product = bare(path) if computed else open_product(path)
    assert isinstance(product, S2Product)
    assert (product.mask_origin == "computed") == computed
    grid = product.grid(resolution)
    with RasterPool() as pool:
        whole = product.mask(grid, pool=pool)
        for size in SIZES:
            streamed = mosaic(grid, size, lambda w: product.mask(grid, w, pool=pool), np.uint8)
            np.testing.assert_array_equal(streamed, whole, err_msg=f"windows of {size}")


# --- patch statistics --------------------------------------------------------------

def brute_force_stats(layer: np.ndarray, patches: PatchGrid) -> dict[str, np.ndarray]:
    """Percentages per patch from the whole mask layer, one patch at a time."""
    cells = patches.cells
    out = {k: np.zeros(patches.shape, np.uint8) for k in ("cloud", "shadow", "nodata")}
    for i in range(patches.rows):
        for j in range(patches.cols):
            block = np.full((cells, cells), MaskClass.NODATA, np.uint8)
            part = layer[i * cells:(i + 1) * cells, j * cells:(j + 1) * cells]
            block[:part.shape[0], :part.shape[1]] = part
            nodata = int(np.count_nonzero(block == MaskClass.NODATA))
            valid = block.size - nodata
            cloud = int(np.count_nonzero(np.isin(block, [MaskClass.CLOUD, MaskClass.CIRRUS])))
            shadow = int(np.count_nonzero(block == MaskClass.SHADOW))
            out["nodata"][i, j] = round(100 * nodata / block.size)
            out["cloud"][i, j] = round(100 * cloud / valid) if valid else 0
            out["shadow"][i, j] = round(100 * shadow / valid) if valid else 0
    return out


@pytest.mark.parametrize("path", [THEIA_PARTLY, THEIA, SAFE_PB0400],
                         ids=["partly", "swath-edge", "safe"])
@pytest.mark.parametrize("computed", [False, True], ids=["product", "computed"])
def test_patch_stats_strips_equal_whole(path: Path, computed: bool) -> None:
    product = bare(path) if computed else open_product(path)
    assert isinstance(product, S2Product)
    # 14 px patches: the last patch row and column are partial (100 and 120 px tiles).
    patches = PatchGrid(product.grid(), patch_size=14)
    whole = product.mask(patches.mask_grid())
    expected = brute_force_stats(whole, patches)
    single = s2_patch_stats(product, patches, strip_rows=patches.rows)
    for strip_rows in (1, 2, 3):
        got = s2_patch_stats(product, patches, strip_rows=strip_rows)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], single[key], err_msg=f"{key} {strip_rows}")
            # Rounding of exact halves may differ by one between numpy and Python.
            assert np.abs(got[key].astype(int) - value).max() <= 1, (key, strip_rows)


def test_s1_patch_stats_strips_equal_whole() -> None:
    image = open_product(S1_VV)
    patches = PatchGrid(open_product(SAFE_PB0400).grid(), patch_size=14)
    whole = s1_patch_stats(image, patches, strip_rows=patches.rows)["nodata"]
    for strip_rows in (1, 3):
        np.testing.assert_array_equal(s1_patch_stats(image, patches,
                                                     strip_rows=strip_rows)["nodata"], whole)


# --- the reprojected DEM -----------------------------------------------------------

def exact_dem(path: Path, grid: Grid) -> np.ndarray:
    """Bilinear DEM at the grid's pixel centres, positions transformed exactly by PROJ."""
    with rasterio.open(path) as src:
        dem = src.read(1).astype(np.float64)
        transform, crs = src.transform, src.crs
    rows, cols = np.mgrid[0:grid.height, 0:grid.width]
    x, y = grid.transform * (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs(grid.crs, crs, always_xy=True).transform(x, y)
    c, r = ~transform * (lon, lat)
    return ndimage.map_coordinates(dem, [r - 0.5, c - 0.5], order=1, mode="nearest")


def compound_dem(tmp_path: Path) -> Path:
    """The DEM fixture re-labelled with a compound CRS (WGS 84 + EGM96 height)."""
    with rasterio.open(DEM) as src:
        profile, data = src.profile, src.read()
    profile["crs"] = CRS.from_user_input("EPSG:4326+5773")
    path = tmp_path / "T33TVM.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("which", ["lonlat", "compound"])
def test_reprojected_dem_windows_equal_whole(tmp_path: Path, which: str) -> None:
    path = DEM if which == "lonlat" else compound_dem(tmp_path)
    dem = Dem.open(path)
    grid = open_product(THEIA).grid()  # EPSG:32633, 10 m; the DEM is 1" lon/lat
    whole = dem.read(grid)
    assert not np.isnan(whole).any()
    # Exact transformer: the whole read is the exact bilinear interpolation (float32).
    np.testing.assert_allclose(whole, exact_dem(DEM, grid), atol=1e-3)
    # Windows of 33 end with a 1 px wide row and column. A compound CRS costs about
    # 40 ms per window (PROJ builds its pipeline each time): fewer windows there.
    sizes = SIZES if which == "lonlat" else (33,)
    with RasterPool() as pool:
        for size in sizes:
            streamed = mosaic(grid, size, lambda w: dem.read(grid, w, pool=pool))
            np.testing.assert_array_equal(streamed, whole, err_msg=f"windows of {size}")
    # Other grid: 20 m, where the 1" DEM is coarser in one axis only.
    grid20 = grid.at_resolution(20.0)
    whole20 = dem.read(grid20)
    np.testing.assert_array_equal(mosaic(grid20, sizes[0], lambda w: dem.read(grid20, w)),
                                  whole20)


# --- a model's block-wise prediction -----------------------------------------------

def tiny_model(name: str) -> tuple[object, object]:
    from decloud.models import build, get_config

    config = get_config(name).model_copy(deep=True)
    net = config.network
    if hasattr(net, "widths"):
        net.widths = [4, 8, 8]  # type: ignore[union-attr]
    else:
        net.features, net.blocks = 8, 2  # type: ignore[union-attr]
    return build(config)


def raw_images(spec: object, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random raw inputs (dataset encodings, 1 % nodata) covering ``height x width`` 10 m px."""
    from decloud.models.inference import input_nodata

    rng = np.random.default_rng(seed)
    out = {}
    for key, s in spec.inputs.items():  # type: ignore[attr-defined]
        h, w = math.ceil(height / s.ratio), math.ceil(width / s.ratio)
        high = 2000.0 if key == "dem" else 65535.0 if key.startswith("s1") else 6000.0
        x = rng.uniform(1.0, high, (1, h, w, s.channels)).astype(np.float32)
        x[rng.random((1, h, w)) < 0.01] = input_nodata(key)
        out[key] = x
    return out


def blockwise(model: object, spec: object, inputs: dict[str, np.ndarray], grid: Grid,
              size: int, margin: int) -> dict[str, np.ndarray]:
    """Predict block by block over ``grid.windows(size, margin, multiple)`` and mosaic."""
    from decloud.models import predict
    from decloud.models.inference import input_nodata

    k = spec.size_multiple  # type: ignore[attr-defined]
    # Inputs around the grid are nodata, as a reader gives them past the tile's edges.
    canvas = {}
    for key, s in spec.inputs.items():  # type: ignore[attr-defined]
        before, after = round(margin / s.ratio), round((margin + size + k) / s.ratio)
        canvas[key] = np.pad(inputs[key], ((0, 0), (before, after), (before, after), (0, 0)),
                             constant_values=input_nodata(key))
    outputs = {key: np.full((1, math.ceil(grid.height / s.ratio),
                             math.ceil(grid.width / s.ratio), s.channels), np.nan, np.float32)
               for key, s in spec.outputs.items()}  # type: ignore[attr-defined]
    for core, padded in grid.windows(size, margin, k):
        block = {}
        for key, s in spec.inputs.items():  # type: ignore[attr-defined]
            r0 = round((int(padded.row_off) + margin) / s.ratio)
            c0 = round((int(padded.col_off) + margin) / s.ratio)
            block[key] = canvas[key][:, r0:r0 + round(padded.height / s.ratio),
                                     c0:c0 + round(padded.width / s.ratio)]
        result = predict(model, spec, block)  # type: ignore[arg-type]
        where = core_crop(core, padded)
        for key, s in spec.outputs.items():  # type: ignore[attr-defined]
            part = crop(result[key], where.scaled(1 / s.ratio), axes=(1, 2))
            r, c = round(core.row_off / s.ratio), round(core.col_off / s.ratio)
            outputs[key][:, r:r + part.shape[1], c:c + part.shape[2]] = part
    return outputs


def whole_image(model: object, spec: object, inputs: dict[str, np.ndarray],
                margin: int) -> dict[str, np.ndarray]:
    """One prediction of the whole image, padded by the margin (nodata) as the blocks are."""
    from decloud.models import predict
    from decloud.models.inference import input_nodata

    k = spec.size_multiple  # type: ignore[attr-defined]
    padded, where = {}, None
    for key, s in spec.inputs.items():  # type: ignore[attr-defined]
        padded[key], crop_here = pad_to_multiple(inputs[key], round(k / s.ratio),
                                                 margin=round(margin / s.ratio),
                                                 fill=input_nodata(key), axes=(1, 2))
        if s.ratio == 1:
            where = crop_here
    assert where is not None
    result = predict(model, spec, padded)  # type: ignore[arg-type]
    return {key: crop(y, where.scaled(1 / spec.outputs[key].ratio), axes=(1, 2))  # type: ignore[attr-defined]
            for key, y in result.items()}


@pytest.mark.parametrize(("name", "height", "width"),
                         [("ssop_unet", 37, 29), ("msop_allbands", 44, 36), ("dsen2cr", 30, 26)])
def test_blockwise_prediction_with_the_spec_margin_equals_whole(name: str, height: int,
                                                                width: int) -> None:
    model, spec = tiny_model(name)
    m = spec.margin  # type: ignore[attr-defined]
    assert m >= spec.receptive_field / 2  # type: ignore[attr-defined]
    inputs = raw_images(spec, height, width)
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5000000), width, height)
    expected = whole_image(model, spec, inputs, m)
    got = blockwise(model, spec, inputs, grid, 16, m)
    for key, value in expected.items():
        assert not np.isnan(got[key]).any()
        # Reflectance x 10000; equal to the bit on CPU, 0.01 leaves room for sums taken
        # in another order by other backends.
        np.testing.assert_allclose(got[key], value, atol=0.01, rtol=0, err_msg=key)
    # Without a halo, blocks show seams: the test sees the context a block lacks.
    bare_blocks = blockwise(model, spec, inputs, grid, 16, 0)
    key = next(iter(expected))
    assert np.abs(bare_blocks[key] - whole_image(model, spec, inputs, 0)[key]).max() > 100
