"""The streaming engine: streamed equals whole, skipped blocks, composite, record, atomicity."""

from __future__ import annotations

import functools
import json
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import rasterio
import rasterio.env
from rasterio.windows import Window

from decloud.constants import S2_NODATA, MaskClass
from decloud.env import gdal_cache_bytes, set_gdal_cache
from decloud.errors import InferenceError, OutputExistsError
from decloud.grid import Grid
from decloud.inference import (
    QUALITY_CLEAR,
    QUALITY_FEATHERED,
    QUALITY_NODATA,
    QUALITY_RECONSTRUCTED,
    BlockMethod,
    BlockResult,
    CompositeOptions,
    EngineOptions,
    KerasMethod,
    default_block_size,
    iter_blocks,
    record_path,
    run,
)
from decloud.inference.engine import DAYS_NODATA, DEFAULT_GDAL_CACHE_MB
from decloud.inputs import AcquisitionProducts, InputKey, InputProducts, read_inputs
from decloud.keys import CLOUD_CLASSES, decode_s2
from decloud.models.config import UNetConfig
from decloud.models.inference import input_nodata, predict
from decloud.models.registry import get_config
from decloud.models.zoo import build
from decloud.products import Dem, S2Product, open_product
from decloud.windows import pad_to_multiple
from tests.conftest import ARCHIVE, DEM, THEIA, THEIA_CLEAR

BANDS = ("B02", "B03", "B04", "B08")


def _s2(path: Path) -> S2Product:
    product = open_product(path)
    assert isinstance(product, S2Product)
    return product


@functools.cache
def _products() -> InputProducts:
    """The cloudy THEIA date of T33TVM as ``t``, a clear one as ``tm1``, and the DEM."""
    return InputProducts({"t": AcquisitionProducts(_s2(THEIA)),
                          "tm1": AcquisitionProducts(_s2(THEIA_CLEAR))},
                         Dem.open(DEM), reference="t")


@functools.cache
def _grid() -> Grid:
    return _s2(THEIA).grid()


@functools.cache
def _method() -> KerasMethod:
    """A tiny untrained single-date U-Net (S2 + DEM), seeded weights."""
    config = get_config("ssop_unet").model_copy(deep=True)
    assert isinstance(config.network, UNetConfig)
    config.network.widths = [4, 8, 8]
    config.network.sources = {"t": ["s2"]}
    keras.utils.set_random_seed(7)
    model, spec = build(config)
    return KerasMethod(model, spec, source="config:ssop_unet")


class Counting:
    """Wraps a method and counts its calls and the blocks it was given."""

    def __init__(self, inner: Any, *, fail_at: int | None = None) -> None:
        self.inner = inner
        self.calls = 0
        self.blocks = 0
        self.fail_at = fail_at
        self.name: str = inner.name
        self.input_keys: tuple[InputKey, ...] = inner.input_keys
        self.output_bands: tuple[str, ...] = inner.output_bands
        self.margin: int = inner.margin
        self.size_multiple: int = inner.size_multiple
        self.extras: tuple[str, ...] = inner.extras

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("method failed mid-run")
        self.blocks += len(next(iter(inputs.values())))
        result: BlockResult = self.inner(inputs)
        return result

    def describe(self) -> dict[str, Any]:
        return dict(self.inner.describe())


class Neighbour:
    """A per-pixel method: the clear date ``tm1`` as the reconstruction, 60 days away."""

    name = "neighbour"
    margin = 0
    size_multiple = 1
    extras = ("days",)

    def __init__(self, bands: tuple[str, ...] = BANDS) -> None:
        self.input_keys = (InputKey.of("s2_tm1", bands),)
        self.output_bands = bands

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        values = decode_s2(inputs["s2_tm1"]) * np.float32(10000)
        days = np.where(np.isfinite(values).all(axis=-1), -60.0, np.nan).astype(np.float32)
        return BlockResult(values, {"days": days})

    def describe(self) -> dict[str, Any]:
        return {"method": "neighbour"}


def _whole_prediction(method: KerasMethod, grid: Grid) -> np.ndarray:
    """One prediction over the whole grid (margin on each side, padded to the multiple)."""
    m, k = method.margin, method.size_multiple
    inputs = read_inputs(method.input_keys, _products(), grid, margin=m, dem_policy="partial")
    batch = {}
    for key, data in inputs.items():
        padded, _ = pad_to_multiple(data.astype(np.float32), k, fill=input_nodata(key),
                                    axes=(0, 1))
        batch[key] = padded[None]
    out = predict(method.model, method.spec, batch)[method.output_key][0]
    out = out[m:m + grid.height, m:m + grid.width]
    seen = (inputs["s2_t"] != S2_NODATA).any(axis=-1)[m:m + grid.height, m:m + grid.width]
    return np.where(seen[..., None], out, np.nan)


def _assemble(method: BlockMethod, grid: Grid, options: EngineOptions
              ) -> tuple[np.ndarray, np.ndarray]:
    values = np.full((grid.height, grid.width, len(method.output_bands)), -1.0, np.float32)
    quality = np.full((grid.height, grid.width), 254, np.uint8)
    for block in iter_blocks(method, _products(), grid, options):
        rows = slice(int(block.core.row_off), int(block.core.row_off + block.core.height))
        cols = slice(int(block.core.col_off), int(block.core.col_off + block.core.width))
        values[rows, cols] = block.reflectance
        quality[rows, cols] = block.quality
    assert (quality != 254).all()  # every pixel written once
    return values, quality


SUBGRIDS = {"full": Window(0, 0, 100, 100), "odd": Window(3, 5, 77, 61)}


@pytest.mark.parametrize("where", SUBGRIDS)
@pytest.mark.parametrize("block", [12, 20, 36])
def test_blocks_equal_one_whole_prediction(where: str, block: int) -> None:
    method = _method()
    grid = _grid().subgrid(SUBGRIDS[where])
    whole = _whole_prediction(method, grid)
    got, quality = _assemble(method, grid, EngineOptions(block_size=block, batch_size=3,
                                                         target=None))
    assert np.array_equal(np.isnan(got), np.isnan(whole))
    ok = np.isfinite(whole)
    assert np.abs(got[ok] - whole[ok]).max() <= 1e-3
    assert np.array_equal(quality == QUALITY_NODATA, ~ok.all(axis=-1))
    # Identical once encoded, borders included.
    assert np.array_equal(np.rint(got[ok]), np.rint(whole[ok]))


def test_a_margin_below_the_receptive_field_shows_seams() -> None:
    """The check above can fail: with too small a halo, blocks differ from the whole."""
    method = Counting(_method())
    method.margin = method.size_multiple
    grid = _grid()
    whole = _whole_prediction(_method(), grid)
    got, _ = _assemble(method, grid, EngineOptions(block_size=20, target=None))
    ok = np.isfinite(whole)
    assert np.abs(got[ok] - whole[ok]).max() > 1.0


def test_blocks_come_in_grid_order_and_a_closed_stream_stops_its_threads() -> None:
    """Composites run in a thread behind the method: order and shutdown still hold."""
    grid = _grid().subgrid(Window(0, 0, 60, 60))
    options = EngineOptions(block_size=12, batch_size=2, prefetch=3)
    cores = [(int(b.core.row_off), int(b.core.col_off))
             for b in iter_blocks(Neighbour(), _products(), grid, options)]
    assert cores == [(r, c) for r in range(0, 60, 12) for c in range(0, 60, 12)]
    stream = iter_blocks(Neighbour(), _products(), grid, options)
    next(stream)
    stream.close()  # what run() does on an error
    assert not [t for t in threading.enumerate()
                if t.name.startswith(("decloud-post", "decloud-read"))]


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_streamed_file_equals_whole_file_with_composite(tmp_path: Path) -> None:
    grid = _grid().subgrid(Window(1, 2, 93, 87))
    composite = CompositeOptions(dilation=3, feather=4)
    whole = run(_method(), _products(), grid, tmp_path / "whole.tif",
                EngineOptions(block_size=128, composite=composite))
    blocks = run(_method(), _products(), grid, tmp_path / "blocks.tif",
                 EngineOptions(block_size=12, batch_size=2, composite=composite))
    assert whole.blocks["total"] == 1 and blocks.blocks["total"] == 64
    for suffix in (".tif", "_quality.tif"):
        assert np.array_equal(_read(tmp_path / f"whole{suffix}"),
                              _read(tmp_path / f"blocks{suffix}"))
    assert whole.pixels == blocks.pixels


def _brute_quality(mask: np.ndarray, options: CompositeOptions) -> np.ndarray:
    """Quality from pairwise distances (no distance transform)."""
    bad = np.argwhere(np.isin(mask, CLOUD_CLASSES))
    quality = np.full(mask.shape, QUALITY_CLEAR, np.uint8)
    quality[mask == MaskClass.NODATA] = QUALITY_RECONSTRUCTED
    if not len(bad):
        return quality
    rows, cols = np.indices(mask.shape)
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1)
    to_bad = np.sqrt(((pixels[:, None, :] - bad[None, :, :]) ** 2).sum(-1)).min(axis=1)
    dilated = np.argwhere((to_bad <= options.dilation).reshape(mask.shape))
    to_dilated = np.sqrt(((pixels[:, None, :] - dilated[None, :, :]) ** 2).sum(-1)).min(axis=1)
    to_dilated = to_dilated.reshape(mask.shape)
    quality[to_dilated == 0] = QUALITY_RECONSTRUCTED
    quality[(to_dilated > 0) & (to_dilated <= options.feather)] = QUALITY_FEATHERED
    quality[mask == MaskClass.NODATA] = QUALITY_RECONSTRUCTED
    return quality


@functools.cache
def _safe_products() -> InputProducts:
    """Two SAFE dates of T31UFS: ``t`` with 52 cirrus pixels, ``tm1`` clear."""
    folder = ARCHIVE / "S2" / "T31UFS"
    return InputProducts({
        "t": AcquisitionProducts(_s2(next(folder.glob("S2A_MSIL2A_20230405*")))),
        "tm1": AcquisitionProducts(_s2(next(folder.glob("S2A_MSIL2A_20230415*"))))})


COMPOSITE_CASES = {
    # Cirrus under the target (SAFE); the target's nodata corner (THEIA), on a subgrid.
    "cirrus": (_safe_products, ("B04", "B08"), None, CompositeOptions(dilation=2, feather=3)),
    "nodata": (_products, BANDS, Window(0, 10, 60, 70), CompositeOptions(dilation=1,
                                                                         feather=5)),
}


@pytest.mark.parametrize("case", COMPOSITE_CASES)
def test_composite_keeps_clear_pixels_and_quality_matches_masks(tmp_path: Path,
                                                                case: str) -> None:
    make, bands, window, options = COMPOSITE_CASES[case]
    products = make()
    grid = products.acquisitions["t"].s2.grid()  # type: ignore[union-attr]
    grid = grid if window is None else grid.subgrid(window)
    record = run(Neighbour(bands), products, grid, tmp_path / "out.tif",
                 EngineOptions(block_size=16, composite=options))
    out, quality, days = (_read(tmp_path / name) for name in
                          ("out.tif", "out_quality.tif", "out_days.tif"))
    inputs = read_inputs([InputKey.of("s2_t", bands), InputKey.of("s2_mask_t"),
                          InputKey.of("s2_tm1", bands)], products, grid)
    target = np.moveaxis(inputs["s2_t"], -1, 0)
    neighbour = np.moveaxis(inputs["s2_tm1"], -1, 0)
    mask = inputs["s2_mask_t"][..., 0]
    bad = np.isin(mask, (*CLOUD_CLASSES, int(MaskClass.NODATA)))
    assert 0.005 < bad.mean() < 0.5  # something to reconstruct, and clear pixels to keep
    expected = _brute_quality(mask, options)
    # Where neither date has a value: nodata; where the neighbour has none: kept.
    no_neighbour = (neighbour == S2_NODATA).any(axis=0)
    no_target = (target == S2_NODATA).any(axis=0)
    expected[no_neighbour] = QUALITY_CLEAR
    expected[no_neighbour & no_target] = QUALITY_NODATA
    expected[~no_neighbour & no_target] = QUALITY_RECONSTRUCTED
    assert np.array_equal(quality[0], expected)
    clear = quality[0] == QUALITY_CLEAR
    assert clear.mean() > 0.3
    assert np.array_equal(out[:, clear], target[:, clear])  # bit-identical
    rec = quality[0] == QUALITY_RECONSTRUCTED
    assert rec.any() and np.array_equal(out[:, rec], neighbour[:, rec])
    blend = quality[0] == QUALITY_FEATHERED
    lo, hi = np.minimum(target, neighbour), np.maximum(target, neighbour)
    assert ((out >= lo) & (out <= hi))[:, blend].all()
    assert blend.any() == (case == "cirrus")  # nodata is neither dilated nor feathered
    assert (out[:, quality[0] == QUALITY_NODATA] == S2_NODATA).all()
    assert set(np.unique(days[0][rec | blend])) == {60}
    assert (days[0][quality[0] == QUALITY_NODATA] == DAYS_NODATA).all()
    assert (days[0][clear] == 0).all()
    assert record.pixels == {"clear": int(clear.sum()), "reconstructed": int(rec.sum()),
                             "feathered": int(blend.sum()),
                             "nodata": int((quality[0] == QUALITY_NODATA).sum())}


def test_all_nodata_blocks_are_skipped_and_stay_nodata(tmp_path: Path) -> None:
    # A grid that runs 80 px past the product on the right and at the bottom.
    grid = _grid().subgrid(Window(60, 60, 120, 120))
    method = Counting(_method())
    options = EngineOptions(block_size=24, batch_size=2)
    record = run(method, _products(), grid, tmp_path / "out.tif", options)
    # Blocks whose padded window (core + margin) misses the product entirely.
    m = method.margin  # the tiny U-Net's, larger than the composite's halo (2 + 3 + 1)
    assert m == record.parameters["margin"] > options.composite.halo
    touching = sum(1 for r in range(0, 120, 24) for c in range(0, 120, 24)
                   if 60 + r - m < 100 and 60 + c - m < 100)
    assert record.blocks["total"] == 25
    assert record.blocks["skipped"] == 25 - touching
    assert method.blocks == touching and record.blocks["method_calls"] == method.calls
    out, quality = _read(tmp_path / "out.tif"), _read(tmp_path / "out_quality.tif")[0]
    outside = np.ones((120, 120), bool)
    outside[:40, :40] = False
    assert (quality[outside] == QUALITY_NODATA).all() and (out[:, outside] == S2_NODATA).all()
    assert (quality[:40, :40] != QUALITY_NODATA).any()


def test_failure_mid_run_leaves_nothing(tmp_path: Path) -> None:
    method = Counting(_method(), fail_at=3)
    with pytest.raises(RuntimeError, match="mid-run"):
        run(method, _products(), _grid(), tmp_path / "out.tif", EngineOptions(block_size=16))
    assert list(tmp_path.iterdir()) == []


def test_record_is_written_last_and_outputs_are_described(tmp_path: Path) -> None:
    out = tmp_path / "scene.tif"
    record = run(_method(), _products(), _grid(), out, EngineOptions(block_size=40))
    path = record_path(out)
    assert path == tmp_path / "scene.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scene.json", "scene.stac.json", "scene.tif", "scene_quality.tif"]
    assert all(path.stat().st_mtime_ns >= p.stat().st_mtime_ns for p in tmp_path.iterdir())
    saved = json.loads(path.read_text())
    assert saved["pixels"] == record.pixels and sum(record.pixels.values()) == 100 * 100
    assert saved["method"]["name"] == "ssop_unet"
    assert saved["inputs"]["acquisitions"]["t"]["s2"]["date"].startswith("2015-09-09")
    assert saved["parameters"]["margin"] == _method().margin
    assert saved["parameters"]["block_size"] == 40
    assert saved["blocks"]["total"] == 9
    with rasterio.open(out) as src:
        assert src.descriptions == BANDS and src.nodata == S2_NODATA
        assert src.dtypes[0] == "int16" and src.profile["tiled"]
        tags = src.tags()
        assert json.loads(tags["DECLOUD_METHOD"])["name"] == "ssop_unet"
        assert "2015-09-09" in tags["DECLOUD_DATES"] and tags["DECLOUD_VERSION"]
    with rasterio.open(tmp_path / "scene_quality.tif") as src:
        assert src.dtypes[0] == "uint8" and src.nodata == QUALITY_NODATA
    with pytest.raises(OutputExistsError):
        run(_method(), _products(), _grid(), out, EngineOptions(block_size=40))
    run(_method(), _products(), _grid(), out, EngineOptions(block_size=40, overwrite=True))


def test_keras_method_and_option_refusals() -> None:
    method = _method()
    assert [k.name for k in method.input_keys] == list(method.spec.inputs)
    assert method.output_bands == BANDS and isinstance(method, BlockMethod)
    with pytest.raises(InferenceError, match="no 10 m S2 output"):
        KerasMethod(method.model, method.spec, output_key="s2_nope")
    with pytest.raises(InferenceError, match="batch_size"):
        EngineOptions(batch_size=0)
    with pytest.raises(InferenceError, match="block_size"):
        EngineOptions(block_size=-4)


def test_gdal_cache_is_set_before_the_run_recorded_and_changes_no_output(
        tmp_path: Path) -> None:
    before = gdal_cache_bytes()
    grid = _grid().subgrid(Window(3, 5, 70, 61))
    try:
        # 1 MiB: GDAL evicts tiles between blocks; the outputs cannot depend on it.
        small = run(Neighbour(), _products(), grid, tmp_path / "small.tif",
                    EngineOptions(block_size=24, gdal_cache_mb=1))
        assert small.parameters["gdal_cache_mb"] == 1
        assert small.parameters["gdal_cache_bytes"] == gdal_cache_bytes() == 2**20
        large = run(Neighbour(), _products(), grid, tmp_path / "large.tif",
                    EngineOptions(block_size=24))
        assert large.parameters["gdal_cache_mb"] == DEFAULT_GDAL_CACHE_MB
        assert large.parameters["gdal_cache_bytes"] == DEFAULT_GDAL_CACHE_MB * 2**20
        for suffix in (".tif", "_quality.tif", "_days.tif"):
            assert np.array_equal(_read(tmp_path / f"small{suffix}"),
                                  _read(tmp_path / f"large{suffix}"))
        set_gdal_cache(5)
        kept = run(Neighbour(), _products(), grid, tmp_path / "kept.tif",
                   EngineOptions(block_size=24, gdal_cache_mb=None))
        assert kept.parameters["gdal_cache_bytes"] == gdal_cache_bytes() == 5 * 2**20
    finally:
        rasterio.env.set_gdal_config("GDAL_CACHEMAX", before)  # process-wide: put back
    for size in (0, True, 2.5):
        with pytest.raises(InferenceError, match="gdal_cache_mb"):
            EngineOptions(gdal_cache_mb=size)  # type: ignore[arg-type]


class Coarse:
    """A per-pixel method on a 20 m key: B11 of ``tm1``, each 20 m pixel on 2 x 2 px."""

    name = "coarse"
    input_keys = (InputKey.of("s2_20m_tm1", ("B11",)),)
    output_bands = ("B11",)
    margin = 0
    size_multiple = 1
    extras = ()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        values = decode_s2(inputs["s2_20m_tm1"]) * np.float32(10000)
        return BlockResult(np.repeat(np.repeat(values, 2, axis=1), 2, axis=2))

    def describe(self) -> dict[str, Any]:
        return {"method": "coarse"}


@pytest.mark.parametrize("block", [15, 22])
def test_blocks_of_a_20m_key_start_on_whole_coarse_pixels(block: int) -> None:
    grid = _grid().subgrid(SUBGRIDS["odd"])
    whole, _ = _assemble(Coarse(), grid, EngineOptions(block_size=256, target=None))
    got, _ = _assemble(Coarse(), grid, EngineOptions(block_size=block, target=None))
    assert np.isfinite(whole).mean() > 0.5
    assert np.array_equal(got, whole, equal_nan=True)


def test_default_block_size_and_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    grid = _grid().subgrid(Window(0, 0, 30, 30))
    quiet = run(Neighbour(), _products(), grid, tmp_path / "quiet.tif")
    assert "block" not in capsys.readouterr().err  # off by default in the library
    # 1280 on CPU, 2048 on a GPU with JAX.
    assert quiet.parameters["block_size"] == default_block_size() in (1280, 2048)
    # Asked for, the bar shows on a terminal only (not in logs or CI).
    run(Neighbour(), _products(), grid, tmp_path / "log.tif",
        EngineOptions(block_size=10, progress=True))
    assert "9/9" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run(Neighbour(), _products(), grid, tmp_path / "bar.tif",
        EngineOptions(block_size=10, progress=True))
    assert "9/9" in capsys.readouterr().err


def test_per_block_products_equal_whole_runs_with_each_blocks_products(tmp_path: Path) -> None:
    """Products chosen per block: each core equals a whole run with that block's products."""
    from decloud.inference.engine import BlockLayer, block_windows

    grid = _grid().subgrid(Window(2, 1, 70, 65))
    cloudy = _products()
    clear = InputProducts({"t": AcquisitionProducts(_s2(THEIA_CLEAR))}, Dem.open(DEM),
                          reference="t")
    options = EngineOptions(block_size=24, target=None)
    cores = [core for core, _ in block_windows(_method(), grid, options)]
    # A checkerboard of product sets; the halo of a block reads its core's products.
    chosen = {(int(c.col_off), int(c.row_off)): (clear if (int(c.col_off) // 24
                                                           + int(c.row_off) // 24) % 2 else cloudy)
              for c in cores}
    asked: list[Window] = []

    def products_of(core: Window) -> InputProducts:
        asked.append(core)
        return chosen[(int(core.col_off), int(core.row_off))]

    def block_id(core: Window) -> np.ndarray:
        return np.full((1, int(core.height), int(core.width)),
                       cores.index(core), np.uint16)

    layer = BlockLayer(("block",), "uint16", 65535, block_id)
    record = run(_method(), products_of, grid, tmp_path / "mixed.tif", options,
                 layers={"block": layer}, extra={"note": [1, 2]})
    assert len(asked) >= len(cores)
    mixed = _read(tmp_path / "mixed.tif")
    wholes = {}
    for name, products in (("cloudy", cloudy), ("clear", clear)):
        run(_method(), products, grid, tmp_path / f"{name}.tif",
            EngineOptions(block_size=128, target=None))
        wholes[id(products)] = _read(tmp_path / f"{name}.tif")
    assert not np.array_equal(wholes[id(cloudy)], wholes[id(clear)])
    for core in cores:
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        whole = wholes[id(chosen[(int(core.col_off), int(core.row_off))])]
        assert np.array_equal(mixed[:, rows, cols], whole[:, rows, cols])
    # The extra layer (nodata where the output is) and the record's extra entries.
    ids = _read(tmp_path / "mixed_block.tif")[0]
    quality = _read(tmp_path / "mixed_quality.tif")[0]
    for i, core in enumerate(cores):
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        want = np.where(quality[rows, cols] == QUALITY_NODATA, 65535, i)
        assert np.array_equal(ids[rows, cols], want)
    saved = json.loads(record_path(tmp_path / "mixed.tif").read_text())
    assert saved["extra"] == record.extra == {"note": [1, 2]}
    assert saved["outputs"]["block"] == str(tmp_path / "mixed_block.tif")
    assert len(saved["inputs"]["per_block"]) == 2
    # A layer may not take an output's name.
    with pytest.raises(InferenceError, match="taken"):
        run(_method(), products_of, grid, tmp_path / "other.tif", options,
            layers={"quality": layer})
