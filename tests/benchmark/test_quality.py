"""The quality benchmark: cloudy references refused, cut hides the truth, regions honest."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from decloud.archive import Archive
from decloud.benchmark.quality import (
    CLOUD_DN,
    COMMON,
    CSMASK_CLOUD_MEDIANS,
    CSMASK_SHADOW_MEDIANS,
    METHODS,
    SHADOW_DN,
    BenchmarkInputs,
    CutFill,
    CutMask,
    PatchGapFillBenchmark,
    QualityOptions,
    bucket_of,
    cut_mask,
    goal_check,
    masks_from_csmask,
    read_output,
    register_method,
    run_quality,
    score_scene,
    summary_rows,
    write_cut_archive,
    write_quality_outputs,
)
from decloud.constants import S2_NODATA, MaskClass
from decloud.errors import CloudyReferenceError, EvaluationError, InferenceError
from decloud.inference.composite import CompositeOptions
from decloud.keys import decode_s2, encode_s2
from tests.conftest import ARCHIVE, DATA

TILE = "T33TVM"


@pytest.fixture(scope="module")
def archive() -> Archive:
    return Archive.from_root(ARCHIVE)


def _csmask_cut(shape: tuple[int, int]) -> CutMask:
    return masks_from_csmask(DATA / "csmask_cloudy.npz", shape, count=1)[0]


def test_spectra_are_the_medians_of_the_real_csmask_scene() -> None:
    with np.load(DATA / "csmask_cloudy.npz") as data:
        img, msk = data["img_dn"].astype(np.float64), data["msk"][..., 0]
        names = [str(b) for b in data["band_names"]]
    for cls, table in ((4, CSMASK_CLOUD_MEDIANS), (0, CSMASK_SHADOW_MEDIANS)):
        medians = np.median(img[msk == cls], axis=0)
        assert {b: round(float(m)) for b, m in zip(names, medians, strict=True)} == table
    assert CLOUD_DN["B02"] == CSMASK_CLOUD_MEDIANS["B02"]
    assert CSMASK_CLOUD_MEDIANS["B04"] < CLOUD_DN["B06"] < CSMASK_CLOUD_MEDIANS["B08"]
    assert SHADOW_DN["B8A"] == CSMASK_SHADOW_MEDIANS["B08"]


def test_buckets() -> None:
    assert [bucket_of(p) for p in (0.0, 10.0, 10.01, 30.0, 45.0, 60.0, 99.0, 100.0)] == [
        "0-10", "0-10", "10-30", "10-30", "30-60", "30-60", "60-100", "60-100"]


def test_csmask_windows_are_real_cloud_and_shadow(archive: Archive) -> None:
    grid = archive.find_s2(TILE, date(2015, 8, 30)).grid()
    cuts = masks_from_csmask(DATA / "csmask_cloudy.npz", grid.shape, count=3)
    assert len(cuts) == 3 and all(c.cloud.shape == grid.shape for c in cuts)
    assert all(c.cloud.any() and not (c.cloud & c.shadow).any() for c in cuts)
    assert any(c.shadow.any() for c in cuts)
    again = masks_from_csmask(DATA / "csmask_cloudy.npz", grid.shape, count=3)
    assert all(np.array_equal(a.cut, b.cut) for a, b in zip(cuts, again, strict=True))


def test_refuses_a_cloudy_reference(archive: Archive, tmp_path: Path) -> None:
    overcast = archive.find_s2(TILE, date(2015, 7, 31))
    cut = _csmask_cut(overcast.grid().shape)
    with pytest.raises(CloudyReferenceError, match=r"100\.0 % cloud") as err:
        write_cut_archive(archive, overcast, cut, tmp_path / "copy")
    assert err.value.path == str(overcast.path)
    assert not (tmp_path / "copy").exists()
    with pytest.raises(CloudyReferenceError):
        run_quality(archive, TILE, [cut], tmp_path / "work", QualityOptions(
            methods=("nearest",)), references=[overcast])


@pytest.mark.parametrize("kind", ["constant", "nodata"])
def test_the_cut_hides_the_truth(archive: Archive, tmp_path: Path, kind: str) -> None:
    original = archive.find_s2(TILE, date(2015, 8, 30))
    cut = _csmask_cut(original.grid().shape)
    scene = write_cut_archive(archive, original, cut, tmp_path / "copy",
                              fill=CutFill(kind))  # type: ignore[arg-type]
    # The working copy does not hold the original, under any name or link.
    linked = {Path(p.path).resolve() for p in scene.archive.s2}
    assert Path(original.path).resolve() not in linked
    assert len(scene.archive.s2) == len(archive.select_s2(TILE))
    # The cut product: its mask says cloud / shadow under the cut, its values hide the truth.
    mask = scene.target.mask()
    assert (mask[cut.cloud] == MaskClass.CLOUD).all()
    assert (mask[cut.shadow] == MaskClass.SHADOW).all()
    assert (mask[~cut.cut] == original.mask()[~cut.cut]).all()
    bands = list(scene.bands)
    seen = scene.target.read(bands)
    truth = decode_s2(scene.truth)
    if kind == "nodata":
        assert np.isnan(seen[:, cut.cut]).all()
    else:
        for i, band in enumerate(bands):
            assert np.allclose(seen[i][cut.cloud], CLOUD_DN[band] / 1e4)
            assert np.allclose(seen[i][cut.shadow], SHADOW_DN[band] / 1e4)
    # Outside the cut, the copy is the original, to the bit.
    outside = np.moveaxis(seen, 0, -1)[~cut.cut]
    assert np.array_equal(np.rint(outside * 1e4), np.rint(truth[~cut.cut] * 1e4),
                          equal_nan=True)
    assert not np.isclose(np.moveaxis(seen, 0, -1)[cut.cut], truth[cut.cut]).all(axis=-1).any()


def test_the_overcast_fill_takes_the_real_cloud_values(archive: Archive,
                                                       tmp_path: Path) -> None:
    original = archive.find_s2(TILE, date(2015, 8, 30))
    overcast = archive.find_s2(TILE, date(2015, 7, 31))
    cut = _csmask_cut(original.grid().shape)
    scene = write_cut_archive(archive, original, cut, tmp_path / "copy",
                              fill=CutFill("overcast", overcast))
    bands = list(scene.bands)
    assert np.array_equal(scene.target.read(bands)[:, cut.cloud],
                          overcast.read(bands)[:, cut.cloud])


def test_never_scores_outside_the_cut(archive: Archive, tmp_path: Path) -> None:
    original = archive.find_s2(TILE, date(2015, 8, 30))
    cut = _csmask_cut(original.grid().shape)
    scene = write_cut_archive(archive, original, cut, tmp_path / "copy")
    truth = decode_s2(scene.truth)
    # Right inside the cut, wrong outside: reconstruction is perfect.
    pred = truth.copy()
    pred[~cut.cut] += 0.5
    scores = score_scene(scene, pred)["regions"]
    rec, clear = scores["reconstructed"]["overall"], scores["clear"]["overall"]
    assert rec["mae"] == 0 and rec["n_pixels"] == np.count_nonzero(cut.cut & scene.valid)
    assert clear["mae"] == pytest.approx(0.5)
    assert rec["n_pixels"] + clear["n_pixels"] == np.count_nonzero(scene.valid)
    # Wrong inside, right outside: the error is all reconstruction error.
    pred = truth.copy()
    pred[cut.cut] += 0.25
    scores = score_scene(scene, pred)["regions"]
    assert scores["reconstructed"]["overall"]["mae"] == pytest.approx(0.25)
    assert scores["clear"]["overall"]["mae"] == 0


@pytest.mark.slow
def test_benchmark_rows_composite_exact_and_regions(archive: Archive, tmp_path: Path) -> None:
    reference = archive.find_s2(TILE, date(2015, 8, 30))
    grid = reference.grid()
    north = np.zeros(grid.shape, dtype=bool)
    north[:20] = True
    cuts = [_csmask_cut(grid.shape), cut_mask("north 20 %", north)]
    seen = []
    result = run_quality(archive, TILE, cuts, tmp_path / "work",
                         QualityOptions(methods=("nearest", "gapfill")),
                         references=[reference],
                         on_scene=lambda scene, bands, preds: seen.append(
                             (scene.fraction, scene.reconstructed.sum(), sorted(preds))))
    assert not list((tmp_path / "work").iterdir())  # work files removed
    assert len(result.rows) == 2 * 2 * 2 and result.common_scenes == 2
    assert [s[2] for s in seen] == [["gapfill", "gapfill+composite", "nearest",
                                     "nearest+composite"]] * 2
    for row, scene_info in ((r, next(s for s in result.scenes if s["cut"] == r["cut"]))
                            for r in result.rows):
        rec = row["scores"]["regions"]["reconstructed"]["overall"]
        clear = row["scores"]["regions"]["clear"]["overall"]
        # Only pixels of the cut are reconstruction; every one of them is covered.
        assert rec["n_pixels"] == scene_info["reconstructed_pixels"] == row["covered_pixels"]
        assert clear["n_pixels"] == scene_info["clear_pixels"] > 0
        if row["variant"] == "composite":
            assert clear["mae"] == 0.0 and clear["rmse"] == 0.0  # exactly the input
        assert rec["mae"] > 0.0
    # The raw nearest date reproduces the clear pixels with the other date's error.
    raw = [r for r in result.rows if r["label"] == "nearest"]
    assert all(r["scores"]["regions"]["clear"]["overall"]["mae"] > 0 for r in raw)
    rows = summary_rows(result)
    assert {r["bucket"] for r in rows} == {"10-30", "30-60", "all", COMMON}
    strip = next(s for s in result.scenes if s["cut"] == "north 20 %")
    assert strip["cut_percent"] == pytest.approx(20.0) and strip["bucket"] == "10-30"
    paths = write_quality_outputs(result, tmp_path / "out")
    assert {"json", "md", "png", "html"} <= set(paths)
    text = paths["md"].read_text()
    assert "no pixels" not in text and "scored px" in text and "Goal" in text
    assert "<table" in paths["html"].read_text()
    assert goal_check(rows)["met"] is None  # no patch_gapfill: not evaluated


def test_registry_and_fits(archive: Archive, tmp_path: Path) -> None:
    class Copy:
        name = "copy"

        def fits(self, inputs: BenchmarkInputs) -> str | None:
            return "never fits"

        def run(self, inputs: BenchmarkInputs, out: Path, *,
                composite: CompositeOptions | None) -> Path:
            raise AssertionError("not run")

    class Boom(Copy):
        name = "boom"

        def fits(self, inputs: BenchmarkInputs) -> str | None:
            return None

        def run(self, inputs: BenchmarkInputs, out: Path, *,
                composite: CompositeOptions | None) -> Path:
            raise InferenceError("no product in the window", field="s2")

    register_method("copy_test", Copy)
    register_method("boom_test", Boom)
    try:
        first = archive.find_s2(TILE, date(2015, 7, 11))
        result = run_quality(archive, TILE, [_csmask_cut(first.grid().shape)],
                             tmp_path / "work", QualityOptions(
                                 methods=("copy_test", "boom_test", "patch_gapfill",
                                          "nearest")),
                             references=[first])
    finally:
        del METHODS["copy_test"], METHODS["boom_test"]
    skipped = result.skipped[first.name]
    assert skipped["copy"] == "never fits"
    assert skipped["boom"].startswith("failed on cut csmask") and "InferenceError" in \
        skipped["boom"]
    assert "before and a date after" in skipped["patch_gapfill"]
    assert {r["method"] for r in result.rows} == {"nearest"}
    assert result.common_scenes == 0


@pytest.mark.slow
def test_cli_writes_the_report_and_refuses_a_cloudy_reference(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from decloud.cli.main import cli

    base = ["benchmark", "quality", "--archive", str(ARCHIVE), "--tile", TILE,
            "--no-archive-cuts", "--csmask", str(DATA / "csmask_cloudy.npz"),
            "--csmask-count", "1", "--method", "nearest", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, [*base, "--reference", "2015-08-30"])
    assert result.exit_code == 0, result.output
    report = tmp_path / "out" / "quality.html"
    assert f"HTML report: {report}" in result.output and report.is_file()
    assert "| all | nearest+composite | 1 |" in result.output
    refused = CliRunner().invoke(cli, [*base, "--reference", "2015-07-31"])
    assert refused.exit_code == 1
    assert "CloudyReferenceError" in refused.output and "100.0 % cloud" in refused.output


def test_cli_refuses_a_fill_date_that_does_not_exist(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from decloud.cli.main import cli

    result = CliRunner().invoke(cli, [
        "benchmark", "quality", "--archive", str(ARCHIVE), "--tile", TILE,
        "--no-archive-cuts", "--csmask", str(DATA / "csmask_cloudy.npz"),
        "--csmask-count", "1", "--method", "nearest", "--reference", "2015-08-30",
        "--fill", "overcast:2023-13-01", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "Invalid value for --fill" in result.output and "2023-13-01" in result.output
    assert not isinstance(result.exception, ValueError)


def test_a_safe_archive_works_too(archive: Archive, tmp_path: Path) -> None:
    # Belgium, T31UFS: SAFE L2A with B04/B08 only at 10 m and a real SCL; 04-05 is not
    # clear enough by its SCL, 04-15 is.
    with pytest.raises(CloudyReferenceError, match="cloud and shadow"):
        run_quality(archive, "T31UFS", [], tmp_path / "w0", references=[
            archive.find_s2("T31UFS", date(2023, 4, 5))])
    reference = archive.find_s2("T31UFS", date(2023, 4, 15))
    cut = _csmask_cut(reference.grid().shape)
    result = run_quality(archive, "T31UFS", [cut], tmp_path / "work",
                         QualityOptions(methods=("nearest",), raw=False),
                         references=[reference])
    (row,) = result.rows
    assert row["bands"] == ["B04", "B08"]
    clear = row["scores"]["regions"]["clear"]["overall"]
    assert clear["n_pixels"] > 0 and clear["mae"] == 0.0
    assert row["scores"]["regions"]["reconstructed"]["overall"]["n_pixels"] == \
        row["reconstructed_pixels"] > 0


@pytest.mark.slow
def test_patch_gapfill_equals_per_pixel_interpolation_between_clear_dates(
        archive: Archive, tmp_path: Path) -> None:
    # 2015-08-30 lies between the clear 07-11 and 09-09 (the overcast dates between are
    # never chosen): CNES's patch-level gap-filling then interpolates the same two
    # observations as the per-pixel one, except where 09-09 is nodata (columns 0-11).
    reference = archive.find_s2(TILE, date(2015, 8, 30))
    seen: dict[str, np.ndarray] = {}
    result = run_quality(archive, TILE, [_csmask_cut(reference.grid().shape)],
                         tmp_path / "work", QualityOptions(methods=("gapfill",
                                                                    "patch_gapfill"),
                                                           raw=False),
                         references=[reference],
                         on_scene=lambda scene, bands, preds: seen.update(
                             preds, cut=scene.cut.cut))
    assert result.common_scenes == 1
    inside = seen["cut"].copy()
    inside[:, :12] = False
    assert inside.any()
    np.testing.assert_allclose(seen["patch_gapfill+composite"][inside],
                               seen["gapfill+composite"][inside], atol=1.01e-4)


def test_patch_gapfill_files_and_model_follow_each_runs_window_and_bands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decloud.benchmark.quality as quality
    import decloud.processors.multitemporal as multitemporal
    import decloud.processors.single_date as single_date

    loaded: list[Any] = []
    runs: list[tuple[Any, Any]] = []

    def load_method(config: Path, untrained: bool) -> object:
        loaded.append(yaml.safe_load(Path(config).read_text())["network"]["s2_bands"])
        return object()

    def run(archive: Any, tile: str, day: date, method: Any, out: Path,
            options: Any) -> None:
        layout = yaml.safe_load(Path(options.layout).read_text())
        runs.append((layout["acquisitions"]["tp1"]["window_hours"], method))

    monkeypatch.setattr(single_date, "load_method", load_method)
    monkeypatch.setattr(multitemporal, "multitemporal", run)
    monkeypatch.setattr(quality, "_PATCH_MODELS", {})
    target = SimpleNamespace(acquired=datetime(2015, 8, 30), path=tmp_path / "t")
    cases = [(10, ("B04", "B03")), (20, ("B04", "B03")), (20, ("B04",)),
             (10, ("B04", "B03")), (10, ("B04", "B03"))]
    inodes = []
    for days, bands in cases:
        scene = SimpleNamespace(archive=None, tile=TILE, target=target, bands=bands)
        inputs = BenchmarkInputs(scene, (), days, tmp_path)  # type: ignore[arg-type]
        PatchGapFillBenchmark().run(inputs, tmp_path / "out.tif", composite=None)
        inodes.append((tmp_path / "patch_gapfill_layout.yaml").stat().st_ino)
    # Each run reads its own window; a model per (bands, window), loaded once.
    assert [hours for hours, _ in runs] == [[12, 240], [12, 480], [12, 480], [12, 240],
                                            [12, 240]]
    assert loaded == [["B04", "B03"], ["B04", "B03"], ["B04"]]
    assert runs[3][1] is runs[0][1] is runs[4][1] and runs[1][1] is not runs[0][1]
    # Unchanged content is not rewritten; no temporary file is left behind.
    assert inodes[4] == inodes[3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "patch_gapfill_layout.yaml", "patch_gapfill_model.yaml"]


def test_read_output_reads_as_the_metrics_do(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 0.5, (2, 6, 5)).astype(np.float32)
    data[0, 1, 2] = np.nan

    def write(path: Path, values: np.ndarray, dtype: str, nodata: float) -> Path:
        with rasterio.open(path, "w", driver="GTiff", width=5, height=6, count=2,
                           dtype=dtype, nodata=nodata, crs="EPSG:32633",
                           transform=from_origin(0, 0, 10, 10)) as dst:
            dst.write(values)
            dst.descriptions = ("B4", "B3")  # short names: the same bands as B04, B03
        return path

    out = write(tmp_path / "out.tif", encode_s2(data), "int16", S2_NODATA)
    got = read_output(out, ["B03", "B04"])
    np.testing.assert_array_equal(got, np.moveaxis(decode_s2(encode_s2(data)), 0, -1)[
        ..., ::-1])
    raw = write(tmp_path / "raw.tif", np.nan_to_num(data * 10000).astype(np.uint16),
                "uint16", 0)
    with pytest.raises(EvaluationError, match=r"raw\.tif \[scale\]"):
        read_output(raw, ["B04"])
