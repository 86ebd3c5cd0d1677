"""The methods through the engine (block-wise equals whole) and the time-series processor."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decloud.archive import Archive
from decloud.constants import S2_NODATA, MaskClass
from decloud.errors import ArgumentError
from decloud.processors.reconstruction.series import METHODS, SeriesDates, build_method
from tests.conftest import ARCHIVE
from tests.processors.reconstruction.conftest import BANDS, blobs

pytest.importorskip("keras")

STACK_DAYS = (0, 9, 15, 24, 31)
STACK_T0 = datetime(2015, 7, 11, 10, 0, 8, tzinfo=UTC)
#: Small parameters, so that the margins stay small against the 101 x 100 px scene.
SMALL: dict[str, dict[str, Any]] = {
    "linear": {},
    "wlr": {"radius": 3, "widen": 2},
    "patchgroup": {"patch": 16, "context": 8, "thresholds": (0.5, 0.0)},
}


@pytest.fixture(scope="module")
def stack_archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Five dates of real T33TVM reflectance (changed per date) with per-pixel masks."""
    import rasterio
    import yaml

    from decloud.products import open_product
    from tests.conftest import THEIA_CLEAR

    root = tmp_path_factory.mktemp("stacks")
    theia = open_product(THEIA_CLEAR)
    grid = theia.grid()
    real = theia.read(list(BANDS))
    folder = root / "S2" / "T33TVM"
    folder.mkdir(parents=True)
    for i, offset in enumerate(STACK_DAYS):
        data = np.rint(real * (1 + 0.1 * i) * 10000 + 50 * i).astype(np.uint16)
        mask = np.where(blobs(real.shape[1:], seed=i, density=0.006, size=5), 1, 0)
        mask = mask.astype(np.uint8)
        mask[:, 90 - 10 * i:] = np.where(i % 2, 255, mask[:, 90 - 10 * i:])
        data[:, mask == 255] = 0
        when = STACK_T0 + timedelta(days=offset)
        stem = folder / f"stack_{when:%Y%m%d}"
        profile = {"driver": "GTiff", "width": grid.width, "height": grid.height,
                   "crs": grid.crs, "transform": grid.transform}
        with rasterio.open(stem.with_suffix(".tif"), "w", count=len(BANDS), dtype="uint16",
                           nodata=0, **profile) as dst:
            dst.write(data)
        with rasterio.open(stem.with_name(stem.name + "_mask.tif"), "w", count=1,
                           dtype="uint8", **profile) as dst:
            dst.write(mask, 1)
        stem.with_suffix(".yaml").write_text(yaml.safe_dump({
            "platform": "S2A", "tile": "T33TVM", "acquired": when.isoformat(),
            "bands": list(BANDS), "mask": {"path": stem.name + "_mask.tif", "cloud": [1],
                                           "nodata": [255]}}))
    return Archive.from_root(root)


def _whole(archive: Archive, kind: str, target: int) -> np.ndarray:
    """The kernel on the whole grid, encoded as the engine writes it: (C, H, W) int16."""
    from decloud.keys import encode_s2

    products = sorted(archive.select_s2("T33TVM"), key=lambda p: p.acquired)
    grid = products[0].grid()
    series = np.stack([encode_s2(np.moveaxis(p.read(list(BANDS), grid), 0, -1))
                       for p in products])
    masks = np.stack([p.mask(grid) for p in products])
    masks[(series == S2_NODATA).any(axis=-1)] = MaskClass.NODATA  # the input contract
    times = np.array([(p.acquired - products[0].acquired).total_seconds() / 86400
                      for p in products])
    method = build_method(kind, [p.acquired for p in products], target, bands=BANDS,
                          buffer=1, **SMALL[kind])
    out, _ = method.reconstruct(series, masks, times, target)
    return encode_s2(np.moveaxis(out, -1, 0) / 10000)


@pytest.mark.slow
@pytest.mark.parametrize("kind", METHODS)
def test_engine_blocks_equal_the_whole_image(stack_archive: Archive, tmp_path: Path,
                                             kind: str) -> None:
    import rasterio

    from decloud.inference import EngineOptions, run
    from decloud.inputs import AcquisitionProducts, InputProducts

    products = sorted(stack_archive.select_s2("T33TVM"), key=lambda p: p.acquired)
    target = 2
    method = build_method(kind, [p.acquired for p in products], target, bands=BANDS,
                          buffer=1, **SMALL[kind])
    inputs = InputProducts({f"d{i}": AcquisitionProducts(s2=p) for i, p in
                            enumerate(products)}, reference="d0")
    expected = _whole(stack_archive, kind, target)
    out = tmp_path / f"{kind}.tif"
    # 24 px blocks (odd edge blocks of 5 and 4 px) with the method's halo.
    run(method, inputs, products[0].grid(), out,
        EngineOptions(block_size=24, target=None, stac=False, readers=1))
    with rasterio.open(out) as src:
        got = src.read()
    np.testing.assert_array_equal(got, expected)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"]["method"] == kind
    assert Path(record["outputs"]["days"]).is_file()
    # Every block has the target's product: no pixel is the fallback's.
    assert record["extra"]["fallback_pixels"] == 0


@pytest.mark.slow
def test_time_series_processor_with_composite_and_quality(tmp_path: Path) -> None:
    import rasterio

    from decloud.inference import QUALITY_CLEAR, QUALITY_NODATA, EngineOptions
    from decloud.keys import encode_s2
    from decloud.processors.timeseries import SeriesOptions, run_series

    archive = Archive.from_root(ARCHIVE)
    plugin = SeriesDates("patchgroup", window_days=6, bands=("B04", "B08"),
                         options={"patch": 16, "context": 8, "thresholds": (0.5, 0.0)})
    options = SeriesOptions(engine=EngineOptions(block_size=32, readers=1), quicklooks=False)
    reports = run_series(archive, "T31UFS", date(2023, 4, 4), date(2023, 4, 8), plugin,
                         tmp_path, options)
    assert reports and all(r.status == "done" for r in reports)
    products = {p.acquired.date(): p for p in archive.select_s2("T31UFS")}
    for report in reports:
        assert report.output is not None
        out = Path(report.output)
        with rasterio.open(out) as src:
            got = src.read()
        with rasterio.open(out.with_name(out.stem + "_quality.tif")) as src:
            quality = src.read(1)
        assert out.with_name(out.stem + "_days.tif").is_file()
        product = products[date.fromisoformat(report.label[:10])]
        original = encode_s2(product.read(["B04", "B08"]))
        clear = quality == QUALITY_CLEAR
        np.testing.assert_array_equal(got[:, clear], original[:, clear])
        assert ((got != S2_NODATA).all(axis=0) | (quality == QUALITY_NODATA)).all()
    # Rerunning the same series resumes: nothing redone.
    again = run_series(archive, "T31UFS", date(2023, 4, 4), date(2023, 4, 8), plugin,
                       tmp_path, options)
    assert [r.status for r in again] == ["complete"] * len(reports)


def test_unknown_methods_are_refused() -> None:
    with pytest.raises(ArgumentError, match="method"):
        build_method("kriging", [STACK_T0], 0)
    with pytest.raises(ArgumentError, match="method"):
        SeriesDates("kriging")
    with pytest.raises(ArgumentError, match="window_days"):
        SeriesDates("wlr", window_days=0)


@pytest.mark.slow
def test_process_series_command_runs_a_reconstruction_method(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from decloud.cli.main import cli

    args = ["process", "series", "--archive", str(ARCHIVE), "--tile", "T31UFS",
            "--start", "2023-04-04", "--end", "2023-04-05", "--method", "wlr",
            "--window-days", "6", "--bands", "B04,B08", "--block-size", "32",
            "--no-quicklooks", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "series.json").read_text())
    assert settings["method"]["method"] == "wlr"
    assert list(tmp_path.glob("T31UFS_*_wlr.tif"))
    result = CliRunner().invoke(cli, ["kriging" if a == "wlr" else a for a in args])
    assert result.exit_code == 2 and "patchgroup" in result.output


def test_a_target_given_in_days_is_the_acquisition_at_that_time(
        reflectance: np.ndarray) -> None:
    from decloud.processors.reconstruction.wlr import WLRMethod

    series = np.stack([reflectance, reflectance // 2 + 100, reflectance])
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    masks[1][blobs(masks.shape[1:], seed=7)] = MaskClass.CLOUD
    inputs: dict[str, np.ndarray] = {}
    for i, day in enumerate((0.0, 10.0, 25.0)):
        inputs[f"s2_d{i}"] = series[i][None]
        inputs[f"s2_mask_d{i}"] = masks[i][None, ..., None]
        inputs[f"dt_d{i}"] = np.array([[day]], dtype=np.float32)
    acquisitions = ["d0", "d1", "d2"]
    by_name = WLRMethod(acquisitions, "d1", radius=3)(inputs)
    by_days = WLRMethod(acquisitions, 10.2, radius=3)(inputs)
    np.testing.assert_array_equal(by_days.reflectance, by_name.reflectance)
    np.testing.assert_array_equal(by_days.extras["days"], by_name.extras["days"])
    # No acquisition within half a day: the interpolation at that time (between days 10
    # and 25 where day 10 is clear, else between days 0 and 25: the larger distance).
    between = WLRMethod(acquisitions, 17.5, radius=3)(inputs)
    assert set(np.unique(between.extras["days"])) == {7.5, 17.5}
    assert np.isfinite(between.reflectance).all()
    with pytest.raises(ArgumentError, match="target"):
        WLRMethod(acquisitions, float("nan"))


@pytest.mark.parametrize("kind", ["wlr", "patchgroup"])
def test_without_a_target_product_the_fallback_is_optional_and_counted(kind: str) -> None:
    from decloud.processors.reconstruction._common import linear
    from decloud.processors.reconstruction.series import method_class

    rng = np.random.default_rng(5)
    series = rng.integers(100, 3000, (3, 16, 16, 4)).astype(np.int16)
    masks = np.zeros(series.shape[:3], dtype=np.uint8)
    masks[2, :4] = MaskClass.CLOUD
    inputs: dict[str, np.ndarray] = {}
    for i, day in enumerate((0.0, 10.0, 25.0)):
        inputs[f"s2_d{i}"] = series[i][None]
        inputs[f"s2_mask_d{i}"] = masks[i][None, ..., None]
        inputs[f"dt_d{i}"] = np.array([[day]], dtype=np.float32)
    inputs["dt_d1"][0, 0] = np.nan  # the block has no product for the target d1
    options: dict[str, Any] = {"patch": 8} if kind == "patchgroup" else {}
    dates = [datetime(2021, 3, 2, tzinfo=UTC) + timedelta(days=d) for d in (0, 10, 25)]
    strict = method_class(kind).from_dates(dates, 1, fallback=False, **options)
    result = strict(inputs)
    # No fallback: nothing is said, nothing is credited to the method.
    assert np.isnan(result.reflectance).all() and np.isnan(result.extras["days"]).all()
    assert strict.report() == {"fallback_pixels": 0}
    lenient = method_class(kind).from_dates(dates, 1, **options)
    result = lenient(inputs)
    expected, days = linear(series[[0, 2]], masks[[0, 2]], [0.0, 25.0], 10.0, 0)
    np.testing.assert_array_equal(result.reflectance[0], expected)
    np.testing.assert_array_equal(result.extras["days"][0], days)
    # Every pixel has a clear day 0: the fallback filled them all, and says so.
    assert lenient.report() == {"fallback_pixels": 16 * 16}
    assert lenient.describe()["fallback"] is True
