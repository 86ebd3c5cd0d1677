"""The time-series processor on the Belgian sample (T31UFS, 12 S2 dates of April 2023)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from decloud.archive import Archive
from decloud.constants import MaskClass
from decloud.errors import InferenceError, ProcessorRerunError
from decloud.keys import CLOUD_CLASSES
from decloud.processors import timeseries
from decloud.processors.timeseries import (
    DatePlan,
    GapFillDates,
    ModelDates,
    SeriesOptions,
    output_path,
    run_series,
)
from tests.conftest import ARCHIVE, file_identity

pytest.importorskip("keras")

TILE = "T31UFS"
START, END = date(2023, 4, 1), date(2023, 4, 15)  # six dates
BANDS = ("B04", "B08")


class Interrupt(Exception):
    """Stands for a crash (not a DecloudError: the series does not catch it)."""


@pytest.fixture(scope="module")
def archive() -> Archive:
    return Archive.from_root(ARCHIVE)


def _options(precision: str = "float32", **kwargs: Any) -> SeriesOptions:
    from decloud.inference import EngineOptions

    return SeriesOptions(engine=EngineOptions(block_size=32, precision=precision), **kwargs)


def _spy(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None,
         error: type[Exception] = Interrupt) -> list[Path]:
    """Record the outputs the engine is run for; raise ``error`` on call ``fail_at``."""
    real = timeseries._run_engine
    calls: list[Path] = []

    def hook(plan: DatePlan, grid: Any, out: Path, engine: Any) -> Any:
        calls.append(out)
        if fail_at is not None and len(calls) == fail_at:
            raise error(f"injected failure on {out.name}")
        return real(plan, grid, out, engine)

    monkeypatch.setattr(timeseries, "_run_engine", hook)
    return calls


def _dates(archive: Archive) -> list[Any]:
    return sorted((p for p in archive.select_s2(TILE, START, END)), key=lambda p: p.acquired)


def test_interrupted_series_resumes_with_exactly_the_remaining_dates(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    method = GapFillDates(bands=BANDS)
    products = _dates(archive)
    expected = [output_path(tmp_path, TILE, p, "gapfill") for p in products]
    assert len(expected) == 6

    calls = _spy(monkeypatch, fail_at=4)
    with pytest.raises(Interrupt):
        run_series(archive, TILE, START, END, method, tmp_path, _options())
    assert calls == expected[:4]
    # The interrupted date left no completion record (nor outputs: the engine is atomic).
    assert not expected[3].with_suffix(".json").exists()
    assert all(p.with_suffix(".json").is_file() for p in expected[:3])

    calls = _spy(monkeypatch)
    reports = run_series(archive, TILE, START, END, method, tmp_path, _options())
    assert calls == expected[3:]
    assert [r.status for r in reports] == ["complete"] * 3 + ["done"] * 3

    calls = _spy(monkeypatch)
    reports = run_series(archive, TILE, START, END, method, tmp_path, _options())
    assert calls == [] and [r.status for r in reports] == ["complete"] * 6


def test_only_a_valid_matching_record_vouches_for_a_date(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rasterio

    method = GapFillDates(bands=BANDS)
    run_series(archive, TILE, START, END, method, tmp_path, _options(quicklooks=False))
    outs = [output_path(tmp_path, TILE, p, "gapfill") for p in _dates(archive)]
    with rasterio.open(outs[0]) as src:
        reference = src.read()
    kept = {p: file_identity(p) for p in outs[4:]}

    # 0: a truncated COG without its record (a crash while writing); 1: a truncated
    # record; 2: a record without its finish time; 3: a record of other inputs.
    outs[0].with_suffix(".json").unlink()
    outs[0].write_bytes(outs[0].read_bytes()[:200])
    outs[1].with_suffix(".json").write_text('{"outputs": {"reflectance": ')
    record = json.loads(outs[2].with_suffix(".json").read_text())
    record["finished"] = ""
    outs[2].with_suffix(".json").write_text(json.dumps(record))
    record = json.loads(outs[3].with_suffix(".json").read_text())
    record["inputs"]["acquisitions"]["d0"]["s2"]["path"] = "/elsewhere/other.SAFE"
    outs[3].with_suffix(".json").write_text(json.dumps(record))

    calls = _spy(monkeypatch)
    reports = run_series(archive, TILE, START, END, method, tmp_path,
                         _options(quicklooks=False))
    assert calls == outs[:4]
    assert [r.status for r in reports] == ["done"] * 4 + ["complete"] * 2
    with rasterio.open(outs[0]) as src:
        np.testing.assert_array_equal(src.read(), reference)
    # Completed dates are not touched: same inode, same bytes.
    assert {p: file_identity(p) for p in outs[4:]} == kept

    # A record of another precision (a bfloat16 run) does not vouch for a float32 date.
    record = json.loads(outs[4].with_suffix(".json").read_text())
    assert record["parameters"]["precision"] == "float32"
    record["parameters"]["precision"] = "bfloat16"
    outs[4].with_suffix(".json").write_text(json.dumps(record))
    calls = _spy(monkeypatch)
    run_series(archive, TILE, START, END, method, tmp_path, _options(quicklooks=False))
    assert calls == [outs[4]]

    # A folder and records written before the precision option existed (no precision
    # entry anywhere) are float32 ones: the rerun resumes, redoing nothing.
    settings = json.loads((tmp_path / "series.json").read_text())
    del settings["precision"]
    (tmp_path / "series.json").write_text(json.dumps(settings))
    record = json.loads(outs[5].with_suffix(".json").read_text())
    del record["parameters"]["precision"]
    outs[5].with_suffix(".json").write_text(json.dumps(record))
    calls = _spy(monkeypatch)
    reports = run_series(archive, TILE, START, END, method, tmp_path,
                         _options(quicklooks=False))
    assert calls == []
    assert [r.status for r in reports] == ["complete"] * 6


def test_a_failed_date_is_recorded_and_the_series_goes_on(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    method = GapFillDates(bands=BANDS)
    calls = _spy(monkeypatch, fail_at=2, error=InferenceError)
    reports = run_series(archive, TILE, START, END, method, tmp_path, _options())
    assert len(calls) == 6
    assert [r.status for r in reports] == ["done", "failed"] + ["done"] * 4
    assert reports[1].output is None and "injected failure" in (reports[1].reason or "")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"] == {"done": 5, "complete": 0, "failed": 1}
    assert "injected failure" in summary["dates"][1]["reason"]
    assert "| failed |" in (tmp_path / "summary.md").read_text()

    # The next run redoes the failed date only; --strict stops at a failure.
    calls = _spy(monkeypatch)
    reports = run_series(archive, TILE, START, END, method, tmp_path, _options())
    assert calls == [output_path(tmp_path, TILE, _dates(archive)[1], "gapfill")]
    assert [r.status for r in reports] == ["complete", "done"] + ["complete"] * 4
    other = tmp_path / "strict"
    _spy(monkeypatch, fail_at=1, error=InferenceError)
    with pytest.raises(InferenceError, match="injected failure"):
        run_series(archive, TILE, START, END, method, other, _options(strict=True))


def test_a_rerun_with_other_parameters_is_refused(archive: Archive, tmp_path: Path) -> None:
    first = date(2023, 4, 2)  # the first date of the sample
    run_series(archive, TILE, START, first, GapFillDates(bands=BANDS), tmp_path,
               _options(quicklooks=False))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ProcessorRerunError, match="2 in the folder, 3 now") as caught:
        run_series(archive, TILE, START, END, GapFillDates(bands=BANDS, buffer=3), tmp_path,
                   _options())
    assert caught.value.field == "method.buffer"
    with pytest.raises(ProcessorRerunError) as caught:
        run_series(archive, TILE, START, END, GapFillDates(bands=("B04",)), tmp_path,
                   _options())
    assert caught.value.field == "method.bands"
    # Another compute precision is another series (bfloat16 outputs differ from float32).
    with pytest.raises(ProcessorRerunError, match="'float32' in the folder") as caught:
        run_series(archive, TILE, START, END, GapFillDates(bands=BANDS), tmp_path,
                   _options(precision="bfloat16"))
    assert caught.value.field == "precision"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # Another date range with the same settings extends the series.
    reports = run_series(archive, TILE, START, END, GapFillDates(bands=BANDS), tmp_path,
                         _options(quicklooks=False))
    assert [r.status for r in reports] == ["complete"] + ["done"] * 5


def test_summary_matches_the_outputs_and_the_masks(archive: Archive, tmp_path: Path) -> None:
    import rasterio
    from matplotlib import image as mpimg

    from decloud.inference import QUALITY_CLEAR, QUALITY_NODATA

    reports = run_series(archive, TILE, START, END, GapFillDates(bands=BANDS), tmp_path,
                         _options())
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary["dates"]) == len(reports) == 6
    for report, entry, product in zip(reports, summary["dates"], _dates(archive), strict=True):
        assert entry["status"] == report.status == "done"
        assert entry["label"] == f"{product.acquired:%Y-%m-%d %H:%M}"
        # Cloud before: cloud, cirrus and shadow over valid pixels of the 60 m mask.
        mask = product.mask(product.grid(60.0))
        valid = mask != MaskClass.NODATA
        cloudy = np.isin(mask, CLOUD_CLASSES) & valid
        assert entry["cloud_before_pct"] == pytest.approx(100 * cloudy.sum() / valid.sum())
        with rasterio.open(entry["output"].replace(".tif", "_quality.tif")) as src:
            quality = src.read(1)
        rebuilt = ~np.isin(quality, [QUALITY_CLEAR, QUALITY_NODATA])
        assert entry["reconstructed_fraction"] == pytest.approx(
            rebuilt.sum() / (quality != QUALITY_NODATA).sum())
        assert entry["nodata_fraction"] == pytest.approx((quality == QUALITY_NODATA).mean())
        assert entry["seconds"] > 0
        assert any(row.startswith(f"| {entry['label']} | done |") for row in table)
        png = mpimg.imread(Path(entry["output"]).with_name(
            Path(entry["output"]).stem + "_quicklook.png"))
        # Input, output and quality side by side, enlarged to at least 256 px.
        zoom = max(1, 256 // max(quality.shape))
        assert png.shape[:2] == (quality.shape[0] * zoom, 3 * quality.shape[1] * zoom + 8)
    # The sample's clear date keeps every pixel; the fully cloudy ones rebuild them all.
    fractions = {e["cloud_before_pct"]: e["reconstructed_fraction"] for e in summary["dates"]}
    assert fractions[0.0] == 0.0 and fractions[100.0] == 1.0


def _tiny_config(tmp_path: Path, dates: list[str]) -> Path:
    sources = ", ".join(f"{d}: [s2]" for d in dates)
    path = tmp_path / f"tiny_{len(dates)}.yaml"
    path.write_text(f"name: tiny_{len(dates)}\nnetwork:\n  kind: unet\n"
                    f"  dates: [{', '.join(dates)}]\n  sources: {{{sources}}}\n"
                    "  s2_bands: [B04, B08]\n  widths: [8, 16]\n")
    return path


def test_model_dates_with_a_single_date_model(archive: Archive, tmp_path: Path) -> None:
    import rasterio

    from decloud.inference import QUALITY_CLEAR
    from decloud.keys import encode_s2
    from decloud.processors.single_date import load_method

    method = ModelDates(load_method(_tiny_config(tmp_path, ["t"]), untrained=True))
    day = date(2023, 4, 5)  # 1.8 % cloud: clear pixels kept, the rest from the model
    reports = run_series(archive, TILE, day, day, method, tmp_path / "out", _options())
    assert [r.status for r in reports] == ["done"]
    out = Path(str(reports[0].output))
    product = archive.find_s2(TILE, day)
    with rasterio.open(out) as src:
        got = src.read()
    with rasterio.open(out.with_name(out.stem + "_quality.tif")) as src:
        clear = src.read(1) == QUALITY_CLEAR
    assert clear.any() and not clear.all()
    np.testing.assert_array_equal(got[:, clear], encode_s2(product.read(list(BANDS)))[:, clear])

    with pytest.raises(InferenceError, match="not a single-date model"):
        ModelDates(load_method(_tiny_config(tmp_path, ["tm1", "t", "tp1"]), untrained=True))


def test_multi_temporal_dates_resume_by_their_per_block_choices(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from decloud.index.catalog import Catalog
    from decloud.processors.single_date import load_method
    from decloud.processors.timeseries import MultiTemporalDates

    scanned = Archive.scan(ARCHIVE / "S2" / TILE, ARCHIVE / "S1" / TILE)
    with Catalog.create(tmp_path / "catalog", patch_size=12) as built:
        assert not built.add(scanned).failed
    config = _tiny_config(tmp_path, ["tm1", "t", "tp1"])
    config.write_text(config.read_text().replace("[s2]", "[s2, s1]"))
    method = MultiTemporalDates(load_method(config, untrained=True), tmp_path / "catalog")
    first, last = date(2023, 4, 12), date(2023, 4, 17)  # three dates
    out = tmp_path / "out"
    calls = _spy(monkeypatch)
    reports = run_series(archive, TILE, first, last, method, out, _options())
    done = [r for r in reports if r.status == "done"]
    assert len(reports) == 3 and done
    # A date fails in planning (no candidate neighbour), before any engine run.
    assert calls == [Path(str(r.output)) for r in done]
    for report in reports:
        assert report.status == "done" or "acquisition" in (report.reason or "")
    record_file = Path(str(done[0].output)).with_suffix(".json")
    record = json.loads(record_file.read_text())
    assert record["extra"]["neighbours"]

    # Complete dates are skipped; one whose record holds other choices is redone.
    record["extra"]["neighbours"][0]["window"] = [0, 0, 1, 1]
    record_file.write_text(json.dumps(record))
    calls = _spy(monkeypatch)
    again = run_series(archive, TILE, first, last, method, out, _options())
    assert calls == [Path(str(done[0].output))]  # only that date
    assert [r.status for r in again] == [
        "done" if r.output == done[0].output else r.status.replace("done", "complete")
        for r in reports]


def test_quicklooks_of_large_outputs_are_read_decimated(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    from matplotlib import image as mpimg

    day = date(2023, 4, 5)
    reports = run_series(archive, TILE, day, day, GapFillDates(bands=BANDS), tmp_path,
                         _options(quicklooks=False))
    out = Path(str(reports[0].output))
    monkeypatch.setattr(timeseries, "QUICKLOOK_SIDE", 20)
    png = timeseries.quicklook(out, tmp_path / "small.png", archive.find_s2(TILE, day))
    # 60 x 66 px read at 4 x the pixel size: 15 x 17 px, then enlarged 256 // 17 = 15 x.
    rows, cols = math.ceil(66 / 4), math.ceil(60 / 4)
    zoom = 256 // rows
    image = mpimg.imread(png)
    assert image.shape[:2] == (rows * zoom, 3 * cols * zoom + 8)
    quality = (image[:, -cols * zoom:, :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(quality, axis=0)}
    assert colours <= {(90, 160, 90), (240, 120, 20), (250, 220, 60), (0, 0, 0)}
    assert (240, 120, 20) in colours  # the date's cloud, reconstructed
