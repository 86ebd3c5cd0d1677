"""GDAL environment: entered by the public entry points, once, with decloud's settings."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.env
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

import decloud.grid
from decloud.datasets.writer import write_dataset
from decloud.env import (
    GDAL_DEFAULTS,
    DecloudEnv,
    decloud_env_active,
    ensure_env,
    gdal_cache_bytes,
    gdal_env,
    set_gdal_cache,
)
from decloud.errors import GdalConfigError
from decloud.grid import Grid, RasterKind, read_on_grid
from decloud.index.catalog import Catalog
from decloud.index.stats import PatchGrid, s1_patch_stats, s2_patch_stats
from decloud.products import Dem, Product, S1Product, S2Product, open_product
from decloud.stack import build_stack
from tests.conftest import DEM, S1_VV, THEIA

WINDOW = Window(100, 200, 64, 48)


@pytest.fixture
def entries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the decloud environments entered (outermost or not) while the test runs."""
    count = [0]
    enter = DecloudEnv.__enter__

    def counting(self: DecloudEnv) -> DecloudEnv:
        count[0] += 1
        return enter(self)

    monkeypatch.setattr(DecloudEnv, "__enter__", counting)
    return count


def _probe() -> dict[str, Any]:
    return {"active": decloud_env_active(), "options": rasterio.env.getenv()}


def test_decorated_function_runs_inside_decloud_settings() -> None:
    assert not decloud_env_active() and not rasterio.env.hasenv()
    seen = ensure_env(_probe)()
    assert seen["active"]
    for key, value in GDAL_DEFAULTS.items():
        assert seen["options"][key] == value
    assert not decloud_env_active() and not rasterio.env.hasenv()


def test_read_on_grid_reads_inside_decloud_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real = decloud.grid._read

    def spy(*args: Any) -> np.ndarray:
        seen.append(rasterio.env.get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN",
                                                 normalize=False))
        return real(*args)

    monkeypatch.setattr(decloud.grid, "_read", spy)
    read_on_grid(DEM, Grid.from_raster(DEM), Window(0, 0, 8, 8), kind=RasterKind.ELEVATION)
    assert seen == ["EMPTY_DIR"]


def test_nested_calls_do_not_reenter(entries: list[int]) -> None:
    product = open_product(THEIA)
    assert isinstance(product, S2Product)
    grid = product.grid()
    product.read(["B02", "B03", "B04", "B8A"], grid, WINDOW)  # one read_on_grid per band
    assert entries[0] == 1
    with gdal_env(CHECK_DISK_FREE_SPACE="NO"):
        product.read(["B02", "B03"], grid, WINDOW)
        assert rasterio.env.getenv()["CHECK_DISK_FREE_SPACE"] == "NO"  # not reset inside
    assert entries[0] == 2


ENTRY_POINTS: list[tuple[str, Callable[[], object]]] = [
    ("Product.read", lambda: open_product(THEIA).read(["B04", "B08"], open_product(THEIA).grid(),
                                                      WINDOW)),
    ("S2Product.mask", lambda: _theia().mask(_theia().grid(), WINDOW)),
    ("S1Product.read", lambda: _s1().read(["VV"], _theia().grid(), WINDOW)),
    ("Dem.read", lambda: Dem.open(DEM).read(Grid.from_raster(DEM), Window(0, 0, 8, 8))),
    ("s2_patch_stats", lambda: s2_patch_stats(_theia(), PatchGrid(_theia().grid(), 64))),
    ("s1_patch_stats", lambda: s1_patch_stats(_s1(), PatchGrid(_s1().grid(), 64))),
]


def _theia() -> S2Product:
    product = open_product(THEIA)
    assert isinstance(product, S2Product)
    return product


def _s1() -> S1Product:
    product = open_product(S1_VV)
    assert isinstance(product, S1Product)
    return product


@pytest.mark.parametrize(("name", "call"), ENTRY_POINTS, ids=[n for n, _ in ENTRY_POINTS])
def test_entry_points_enter_the_environment_once(
    name: str, call: Callable[[], object], entries: list[int]
) -> None:
    assert not decloud_env_active()
    call()
    assert entries[0] == 1, name
    assert not decloud_env_active()


@pytest.mark.parametrize("entry", [
    read_on_grid, Product.read, S2Product.mask, S1Product.read, Dem.read, build_stack,
    write_dataset, s2_patch_stats, s1_patch_stats, Catalog.add,
])
def test_public_io_entry_points_are_decorated(entry: Callable[..., object]) -> None:
    # The writers (CogWriter, BackgroundWriter) enter it themselves: see test_writers.py.
    assert entry.__code__ is ensure_env(_probe).__code__, entry.__qualname__


def test_options_of_an_enclosing_rasterio_env_are_kept() -> None:
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE", GDAL_PAM_ENABLED="NO"):
        seen = ensure_env(_probe)()
        assert rasterio.env.getenv()["GDAL_DISABLE_READDIR_ON_OPEN"] == "FALSE"
        assert not decloud_env_active()
    assert seen["active"]
    assert seen["options"]["GDAL_DISABLE_READDIR_ON_OPEN"] == "FALSE"
    assert seen["options"]["GDAL_PAM_ENABLED"] == "NO"
    assert seen["options"]["CHECK_DISK_FREE_SPACE"] == "YES"


def test_each_thread_enters_its_own_environment(entries: list[int]) -> None:
    seen: list[dict[str, Any]] = []
    with gdal_env():
        thread = threading.Thread(target=lambda: seen.append(ensure_env(_probe)()))
        thread.start()
        thread.join(30)
        assert decloud_env_active()
    assert seen[0]["active"] and entries[0] == 2


def test_block_cache_is_process_wide_and_left_alone() -> None:
    with pytest.raises(GdalConfigError, match="process-wide") as err:
        gdal_env(GDAL_CACHEMAX=512)
    assert err.value.field == "GDAL_CACHEMAX"
    with gdal_env():
        before = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    inside = ensure_env(lambda: rasterio.env.get_gdal_config("GDAL_CACHEMAX"))()
    assert inside == before > 64 * 2**20  # bytes, GDAL's default share of the RAM


def _damaged_jpeg(path: Path) -> Path:
    """A tiled JPEG GeoTIFF with 40 zeroed bytes: libjpeg warns, the read succeeds."""
    data = (np.random.default_rng(0).random((1, 512, 512)) * 255).astype("uint8")
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1,
                       dtype="uint8", crs=CRS.from_epsg(32631),
                       transform=Affine(10, 0, 0, 0, -10, 5120), tiled=True,
                       blockxsize=256, blockysize=256, compress="JPEG") as dst:
        dst.write(data)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 40] = bytes(40)
    path.write_bytes(bytes(raw))
    return path


def test_gdal_warnings_go_to_logging_not_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = _damaged_jpeg(tmp_path / "damaged.tif")
    capfd.readouterr()
    with caplog.at_level(logging.WARNING):
        out = read_on_grid(path, Grid.from_raster(path), kind=RasterKind.MASK)
    assert out.shape == (1, 512, 512)
    records = [r.getMessage() for r in caplog.records if r.name.startswith("rasterio")]
    assert any("CPLE_" in m and "JPEG" in m for m in records), records
    assert "JPEG" not in capfd.readouterr().err  # GDAL printed nothing itself


def _libgdal() -> ctypes.CDLL:
    """The GDAL library rasterio loaded in this process (its file, from the memory map)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps to find the loaded GDAL library")
    paths = {line.split()[-1] for line in maps.read_text().splitlines()
             if "libgdal" in line.rsplit("/", 1)[-1]}
    assert len(paths) == 1, paths
    lib = ctypes.CDLL(paths.pop())
    lib.GDALGetCacheMax64.restype = ctypes.c_int64
    lib.GDALGetCacheUsed64.restype = ctypes.c_int64
    return lib


@pytest.fixture
def restore_cache() -> Iterator[int]:
    """GDAL's block cache size before the test, set back after it (it is process-wide)."""
    before = gdal_cache_bytes()
    yield before
    rasterio.env.set_gdal_config("GDAL_CACHEMAX", before)  # bytes: GDAL's default share
    assert gdal_cache_bytes() == before


def test_set_gdal_cache_is_process_wide_in_mib(restore_cache: int, tmp_path: Path) -> None:
    lib = _libgdal()  # GDAL's own answer, not rasterio's
    assert gdal_cache_bytes() == lib.GDALGetCacheMax64() == restore_cache
    assert set_gdal_cache(3) == 3 * 2**20 == lib.GDALGetCacheMax64() == gdal_cache_bytes()
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(ensure_env(gdal_cache_bytes)()))
    thread.start()
    thread.join(30)
    assert seen == [3 * 2**20]  # other threads and their environments share it
    # GDAL keeps to it: reading 16 MB of 256 x 256 float32 tiles leaves at most 3 MiB.
    path = tmp_path / "big.tif"
    with rasterio.open(path, "w", driver="GTiff", width=2048, height=2048, count=1,
                       dtype="float32", crs=CRS.from_epsg(32631),
                       transform=Affine(10, 0, 0, 0, -10, 20480), tiled=True,
                       blockxsize=256, blockysize=256) as dst:
        dst.write(np.ones((1, 2048, 2048), dtype="float32"))
    with rasterio.open(path) as src:
        assert src.read().sum() == 2048 * 2048
        assert 0 < lib.GDALGetCacheUsed64() <= 3 * 2**20
        set_gdal_cache(64)
        src.read()
        assert lib.GDALGetCacheUsed64() > 12 * 2**20  # the whole raster stays cached


@pytest.mark.parametrize("size", [0, -5, True, 1.5, "256"])
def test_set_gdal_cache_refuses_what_is_not_mib(size: Any, restore_cache: int) -> None:
    with pytest.raises(GdalConfigError, match="positive number of MiB") as err:
        set_gdal_cache(size)
    assert err.value.field == "GDAL_CACHEMAX"
    assert gdal_cache_bytes() == restore_cache
