"""COG writer and atomic outputs: valid COGs, tags, nothing half-written or overwritten."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.env
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from decloud.env import decloud_env_active
from decloud.errors import ArgumentError, LossyCastError, OutputExistsError, OutputWriteError
from decloud.grid import Grid
from decloud.keys import S2_NODATA, encode_s2
from decloud.quicklook import s1_false_colour, s2_true_colour, stretch, write_png
from decloud.writers import (
    DEFAULT_COG_THREADS,
    BackgroundWriter,
    CogWriter,
    atomic_dir,
    lossless_cast,
    provenance_tags,
)
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


# Lossy casts ---------------------------------------------------------------------------

SMALL = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5000000), 300, 200)


@pytest.mark.parametrize(("data", "dtype"), [
    (np.array([[-10000, 0, 32767]], np.int16), "int16"),
    (np.array([[0, 200, 255]], np.uint8), "uint16"),
    (np.array([[0, 65535]], np.int32), "uint16"),          # narrower type, values in range
    (np.array([[0.5, np.nan, 1e30]], np.float32), "float32"),
    (np.array([[0.1, np.nan, -3.5]], np.float64), "float32"),  # rounding, not truncation
    (np.array([[1.0, -2.0, 255.0]], np.float32), "int16"),     # integral floats in range
    (np.array([[-(2**24), 2**24]], np.int32), "float32"),      # exact in float32
    (np.array([[True, False]]), "uint8"),
])
def test_lossless_casts_are_allowed(data: np.ndarray, dtype: str) -> None:
    out = lossless_cast(data, dtype)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, data.astype(dtype))
    # At most float32 rounding: no truncation, no wrapping.
    np.testing.assert_allclose(out.astype(np.float64), data.astype(np.float64), rtol=1e-7)


@pytest.mark.parametrize(("data", "dtype", "reason"), [
    (np.array([[0.0, 1.0], [0.1, 0.3]], np.float32), "int16", "fractional"),
    (np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32), "int16", "NaN"),
    (np.array([[0.0, 1.0], [np.inf, 2.0]], np.float64), "uint8", "NaN or infinite"),
    (np.array([[0.0, 1.0], [40000.0, 2.0]], np.float32), "int16", "outside"),
    (np.array([[0, 1], [70000, 2]], np.int32), "uint16", "70000 outside 0..65535"),
    (np.array([[0, 1], [-1, 2]], np.int16), "uint16", "-1"),
    (np.array([[0, 1], [300, 2]], np.uint16), "uint8", "outside 0..255"),
    (np.array([[0, 1], [2**24 + 1, 2]], np.int32), "float32", "rounded"),
])
def test_lossy_casts_raise_naming_file_dtypes_and_band(
    data: np.ndarray, dtype: str, reason: str
) -> None:
    with pytest.raises(LossyCastError, match=reason) as err:
        lossless_cast(data, dtype, path="out.tif", band_names=["B02", "B03"])
    # The second band holds the bad value; the message names the file and both dtypes.
    assert err.value.field == "B03" and err.value.path == "out.tif"
    assert str(data.dtype) in str(err.value) and dtype in str(err.value)


def test_writer_refuses_float_into_int16_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s2.tif"
    reflectance = np.full((2, 200, 300), 0.1234, np.float32)
    with pytest.raises(LossyCastError, match=r"s2\.tif \[B03\].*float32.*int16"), \
            CogWriter(path, SMALL, 2, "int16", S2_NODATA, band_names=["B03", "B04"]) as writer:
        writer.write(reflectance)
    assert leftovers(tmp_path) == []
    # Out-of-range integers into a narrower type: the band named is the one that overflows.
    counts = np.zeros((2, 200, 300), np.int32)
    counts[1, 5, 5] = 70000
    with pytest.raises(LossyCastError, match=r"\[vh\].*70000"), \
            CogWriter(path, SMALL, 2, "uint16", 0, band_names=["vv", "vh"]) as writer:
        writer.write(counts)
    assert leftovers(tmp_path) == []


def test_writer_with_encoder_rounds_clips_and_sets_nodata(tmp_path: Path) -> None:
    path = tmp_path / "s2.tif"
    reflectance = np.random.default_rng(0).uniform(-0.2, 1.2, (2, 200, 300)).astype(np.float32)
    reflectance[0, 10:20, 30:40] = np.nan
    reflectance[1, 0, 0] = 7.0      # above the int16 range once scaled: clipped
    reflectance[1, 0, 1] = -1.5     # would read as nodata if not clipped above it
    reflectance[1, 0, 2] = 0.12345  # 1234.5 rounds half to even: 1234
    with CogWriter(path, SMALL, 2, "int16", S2_NODATA, encoder=encode_s2) as writer:
        for core, _ in SMALL.windows(128):
            r, c = int(core.row_off), int(core.col_off)
            writer.write(reflectance[:, r:r + core.height, c:c + core.width], core)
    with rasterio.open(path) as src:
        stored = src.read()
    # Independent reference: numpy's round-half-even, clip, nodata where NaN.
    expected = np.clip(np.rint(np.nan_to_num(reflectance, nan=0) * 10000), -9999, 32767)
    expected = np.where(np.isnan(reflectance), S2_NODATA, expected).astype(np.int16)
    np.testing.assert_array_equal(stored, expected)
    assert stored[1, 0, :3].tolist() == [32767, -9999, round(0.12345 * 10000)]
    assert (stored[0, 10:20, 30:40] == S2_NODATA).all()


def test_lossless_writes_keep_values(tmp_path: Path) -> None:
    cases = [("int16", np.int16), ("uint16", np.uint8), ("float32", np.float32),
             ("float32", np.float64)]
    for i, (dtype, given) in enumerate(cases):
        data = (np.arange(200 * 300).reshape(1, 200, 300) % 251).astype(given)
        with CogWriter(tmp_path / f"{i}.tif", SMALL, 1, dtype, None) as writer:
            writer.write(data)
        with rasterio.open(tmp_path / f"{i}.tif") as src:
            assert src.dtypes[0] == dtype
            np.testing.assert_array_equal(src.read(), data.astype(dtype))


# COG conversion threads ----------------------------------------------------------------

def test_cog_conversion_uses_the_threads_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str | None]] = []
    real_copy = rasterio.shutil.copy

    def spy(*args: object, **kwargs: object) -> object:
        seen.append((str(kwargs["NUM_THREADS"]),
                     rasterio.env.get_gdal_config("GDAL_NUM_THREADS", normalize=False)))
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(rasterio.shutil, "copy", spy)
    data = (np.arange(200 * 300).reshape(1, 200, 300) % 3000).astype(np.int16)
    with CogWriter(tmp_path / "one.tif", SMALL, 1, "int16", None) as writer:  # the default
        writer.write(data)
    with CogWriter(tmp_path / "three.tif", SMALL, 1, "int16", None, threads=3) as writer:
        writer.write(data)
    assert DEFAULT_COG_THREADS == 1
    assert seen == [("1", "1"), ("3", "3")]
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "three.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.read(1, out_shape=(50, 75)), b.read(1, out_shape=(50, 75)))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ArgumentError, match="threads"):
            CogWriter(tmp_path / "x.tif", SMALL, 1, "int16", None, threads=bad)  # type: ignore[arg-type]


def test_no_all_cpus_in_the_package() -> None:
    package = Path(__file__).resolve().parents[1] / "decloud"
    # A quoted value is a use (NUM_THREADS="ALL_CPUS"); docs may mention it.
    users = [p for p in package.rglob("*.py") if re.search(r"[\"']ALL_CPUS[\"']", p.read_text())]
    assert users == []


def test_writer_runs_inside_decloud_gdal_env(tmp_path: Path) -> None:
    assert not decloud_env_active()
    with CogWriter(tmp_path / "a.tif", SMALL, 1, "uint8", 0) as writer:
        assert decloud_env_active()
        assert rasterio.env.getenv()["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
        writer.write(np.zeros((1, 200, 300), np.uint8))
    assert not decloud_env_active()


# Background writer ---------------------------------------------------------------------

def _pair(folder: Path, *, encoder: bool = True) -> dict[str, CogWriter]:
    return {
        "s2": CogWriter(folder / "s2.tif", SMALL, 2, "int16", S2_NODATA, band_names=["B04", "B08"],
                        tags={"DECLOUD_KEY": "s2"}, encoder=encode_s2 if encoder else None),
        "mask": CogWriter(folder / "mask.tif", SMALL, 1, "uint8", 255, band_names=["mask"]),
    }


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    reflectance = rng.uniform(0, 0.6, (2, 200, 300)).astype(np.float32)
    reflectance[:, 150:, 250:] = np.nan
    return reflectance, rng.integers(0, 4, (1, 200, 300), dtype=np.uint8)


def test_background_writer_equals_foreground(tmp_path: Path) -> None:
    reflectance, mask = _inputs()
    (tmp_path / "fg").mkdir()
    fg = _pair(tmp_path / "fg")
    with fg["s2"] as s2, fg["mask"] as m:
        for core, _ in SMALL.windows(64):
            r, c, h, w = int(core.row_off), int(core.col_off), core.height, core.width
            s2.write(reflectance[:, r:r + h, c:c + w], core)
            m.write(mask[:, r:r + h, c:c + w], core)
    caller = threading.get_ident()
    with BackgroundWriter(_pair(tmp_path / "bg"), queue_size=2) as out:
        for core, _ in SMALL.windows(64):
            r, c, h, w = int(core.row_off), int(core.col_off), core.height, core.width
            out.submit("s2", reflectance[:, r:r + h, c:c + w], core)
            out.submit("mask", mask[:, r:r + h, c:c + w], core)
    assert threading.get_ident() == caller
    for name in ("s2.tif", "mask.tif"):
        with rasterio.open(tmp_path / "fg" / name) as a, rasterio.open(tmp_path / "bg" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.profile == b.profile and a.tags() == b.tags()
            assert a.descriptions == b.descriptions and a.overviews(1) == b.overviews(1)
    assert sorted(p.name for p in leftovers(tmp_path / "bg")) == ["mask.tif", "s2.tif"]


def test_background_writer_error_is_raised_in_caller_and_nothing_remains(tmp_path: Path) -> None:
    reflectance, mask = _inputs()
    # No encoder: float reflectance into int16 fails in the writer thread.
    with pytest.raises(LossyCastError, match=r"s2\.tif \[B04\]"), \
            BackgroundWriter(_pair(tmp_path, encoder=False), queue_size=1) as out:
        out.submit("mask", mask)
        for _ in range(50):  # the error surfaces at one of the next submits
            out.submit("s2", reflectance)
    assert leftovers(tmp_path) == []
    with pytest.raises(ArgumentError, match="no writer 'dem'"), \
            BackgroundWriter(_pair(tmp_path)) as out:
        out.submit("dem", mask)
    assert leftovers(tmp_path) == []


def test_background_writer_error_at_close(tmp_path: Path) -> None:
    reflectance, _ = _inputs()
    with pytest.raises(LossyCastError), \
            BackgroundWriter(_pair(tmp_path, encoder=False)) as out:
        out.submit("s2", reflectance)  # queued: the error comes when closing
    assert leftovers(tmp_path) == []


def test_background_writer_caller_failure_discards_everything(tmp_path: Path) -> None:
    reflectance, mask = _inputs()
    with pytest.raises(RuntimeError, match="model crashed"), \
            BackgroundWriter(_pair(tmp_path)) as out:
        out.submit("s2", reflectance)
        out.submit("mask", mask)
        raise RuntimeError("model crashed")
    assert leftovers(tmp_path) == []
    # An existing output is refused on entering, and kept.
    (tmp_path / "mask.tif").write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"mask\.tif"):
        BackgroundWriter(_pair(tmp_path)).__enter__()
    assert [p.name for p in leftovers(tmp_path)] == ["mask.tif"]
    assert (tmp_path / "mask.tif").read_bytes() == b"precious"


def test_background_writer_queue_bounds_memory(tmp_path: Path) -> None:
    release, started = threading.Event(), threading.Event()

    def slow_encoder(data: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(10)
        return encode_s2(data)

    writer = CogWriter(tmp_path / "s2.tif", SMALL, 1, "int16", S2_NODATA, encoder=slow_encoder)
    window = Window(0, 0, 300, 200)
    submitted: list[int] = []
    with BackgroundWriter({"s2": writer}, queue_size=2) as out:

        def produce() -> None:
            for i in range(6):
                out.submit("s2", np.full((1, 200, 300), i / 10, np.float32), window)
                submitted.append(i)

        producer = threading.Thread(target=produce)
        producer.start()
        assert started.wait(10)
        deadline = time.monotonic() + 10
        while len(submitted) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        # One array in the encoder, two queued: the fourth submit blocks.
        assert len(submitted) == 3 and producer.is_alive()
        release.set()
        producer.join(10)
        assert submitted == list(range(6))
    with rasterio.open(tmp_path / "s2.tif") as src:
        assert (src.read() == 5000).all()  # the last window written wins


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    with pytest.raises(ArgumentError, match="3 band names for 2 bands") as err:
        CogWriter(path, GRID, 2, "int16", -10000, band_names=["B02", "B03", "B04"])
    assert err.value.field == "band_names" and err.value.path == str(path)
    writer = CogWriter(path, GRID, 1, "uint8", 0)
    with pytest.raises(OutputWriteError, match="not open"):
        writer.write(np.zeros((1, 900, 1100), np.uint8))
    with pytest.raises(ArgumentError, match=r"shape \(900, 1100\) is not \(1, height"), \
            CogWriter(path, GRID, 1, "uint8", 0) as writer:
        writer.write(np.zeros((900, 1100), np.uint8))
    assert leftovers(tmp_path) == []


def test_writers_and_quicklooks_do_not_import_matplotlib() -> None:
    code = ("import sys, decloud.writers, decloud.quicklook; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
