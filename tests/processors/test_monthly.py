"""Monthly synthesis on the Belgian sample (T31UFS: 12 S2 dates, 2 to 30 April 2023)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from decloud.archive import Archive
from decloud.constants import S2_NODATA, MaskClass
from decloud.errors import ArgumentError, InferenceError
from decloud.processors.gapfill import fill_gaps
from decloud.processors.monthly import (
    MonthlyGapFill,
    MonthlyModel,
    month_bounds,
    monthly_synthesis,
)
from decloud.processors.timeseries import SeriesOptions
from tests.conftest import ARCHIVE, file_identity

pytest.importorskip("keras")

TILE = "T31UFS"
BANDS = ("B04", "B08")


@pytest.fixture(scope="module")
def archive() -> Archive:
    return Archive.from_root(ARCHIVE)


def _options() -> SeriesOptions:
    from decloud.inference import EngineOptions

    return SeriesOptions(engine=EngineOptions(block_size=32))


def test_month_bounds() -> None:
    first, middle, end = month_bounds(2024, 2)
    assert first == datetime(2024, 2, 1, tzinfo=UTC)
    assert end == datetime(2024, 3, 1, tzinfo=UTC)
    assert middle == datetime(2024, 2, 15, 12, tzinfo=UTC)  # 29 days: leap year
    assert month_bounds(2023, 12)[2] == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ArgumentError):
        month_bounds(2023, 13)


def _whole_reference(archive: Archive, middle: datetime, low: datetime, high: datetime,
                     max_days: float) -> np.ndarray:
    """The gap-filling kernel on the whole grid (no engine), encoded (C, H, W)."""
    from decloud.keys import encode_s2

    products = sorted((p for p in archive.select_s2(TILE) if low <= p.acquired < high),
                      key=lambda p: p.acquired)
    grid = products[0].grid()
    series = np.stack([encode_s2(np.moveaxis(p.read(list(BANDS), grid), 0, -1))
                       for p in products])
    masks = np.stack([p.mask(grid) for p in products])
    masks[(series == S2_NODATA).any(axis=-1)] = MaskClass.NODATA  # the input contract
    filled = fill_gaps(series, masks, [p.acquired for p in products], middle, buffer=2,
                       max_days=max_days)
    return encode_s2(np.moveaxis(filled.reflectance[0], -1, 0) / 10000)


def test_monthly_gapfill_equals_the_kernel_at_mid_month(archive: Archive,
                                                         tmp_path: Path) -> None:
    import rasterio

    method = MonthlyGapFill(window_days=5, buffer=2, bands=BANDS)
    reports = monthly_synthesis(archive, TILE, 2023, method, tmp_path, _options(),
                                months=[4, 6])
    assert [r.label for r in reports] == ["2023-04", "2023-06"]
    assert [r.status for r in reports] == ["done", "failed"]
    assert "no S2 product" in (reports[1].reason or "")
    first, middle, end = month_bounds(2023, 4)
    window = timedelta(days=5)
    expected = _whole_reference(archive, middle, first - window, end + window,
                                (end - middle + window).total_seconds() / 86400)
    out = tmp_path / "T31UFS_202304_monthly_gapfill.tif"
    assert reports[0].output == str(out)
    with rasterio.open(out) as src:
        got = src.read()
        assert src.descriptions == BANDS
    np.testing.assert_array_equal(got, expected)
    assert (got != S2_NODATA).any()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"]["target_date"] == middle.isoformat()
    assert len(record["inputs"]["acquisitions"]) == 12  # all of April's dates
    # No date's pixels are kept: a synthesis is reconstructed everywhere it has a value.
    assert reports[0].reconstructed_fraction == 1.0

    stamp = file_identity(out)
    again = monthly_synthesis(archive, TILE, 2023, method, tmp_path, _options(), months=[4])
    assert [r.status for r in again] == ["complete"] and file_identity(out) == stamp


def _tiny_config(tmp_path: Path, dates: list[str]) -> Path:
    sources = ", ".join(f"{d}: [s2]" for d in dates)
    path = tmp_path / f"tiny_{len(dates)}.yaml"
    path.write_text(f"name: tiny_{len(dates)}\nnetwork:\n  kind: unet\n"
                    f"  dates: [{', '.join(dates)}]\n  sources: {{{sources}}}\n"
                    "  s2_bands: [B04, B08]\n  widths: [8, 16]\n")
    return path


def test_monthly_model_takes_the_dates_nearest_the_nominal_ones(archive: Archive,
                                                                 tmp_path: Path) -> None:
    from decloud.processors.single_date import load_method

    names = [f"t{i}" for i in range(6)]
    method = MonthlyModel(load_method(_tiny_config(tmp_path, names), untrained=True))
    assert method.acquisitions() == names
    reports = monthly_synthesis(archive, TILE, 2023, method, tmp_path / "out", _options(),
                                months=[4])
    assert [r.status for r in reports] == ["done"]
    record = json.loads(Path(str(reports[0].output)).with_suffix(".json").read_text())
    products = archive.select_s2(TILE)
    for k, name in enumerate(names):
        nominal = datetime(2023, 4, 1, tzinfo=UTC) + timedelta(days=5 * k)
        gaps = sorted(abs(p.acquired - nominal) for p in products)
        chosen = datetime.fromisoformat(record["inputs"]["acquisitions"][name]["s2"]["date"])
        assert abs(chosen - nominal) == gaps[0]

    with pytest.raises(InferenceError, match="monthly model"):
        MonthlyModel(load_method(_tiny_config(tmp_path, ["tm1", "t", "tp1"]),
                                 untrained=True)).acquisitions()
