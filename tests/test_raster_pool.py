"""RasterPool: bounded (least recently used datasets are closed) and owned by one thread."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from decloud.errors import ArgumentError, PoolThreadError
from decloud.grid import Grid, RasterPool, read_on_grid


def _rasters(folder: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"r{i}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint8", crs=CRS.from_epsg(32631),
                           transform=Affine(10, 0, 0, 0, -10, 80)) as dst:
            dst.write(np.full((1, 8, 8), i, np.uint8))
        paths.append(path)
    return paths


def test_lru_eviction_closes_the_least_recently_used(tmp_path: Path) -> None:
    a, b, c = _rasters(tmp_path, 3)
    with RasterPool(max_open=2) as pool:
        src_a, src_b = pool.get(a), pool.get(b)
        assert pool.get(a) is src_a  # a is now the most recently used
        src_c = pool.get(c)
        assert src_b.closed and not src_a.closed and not src_c.closed and len(pool) == 2
        src_b2 = pool.get(b)  # reopened; a is now the least recently used
        assert src_b2 is not src_b and src_a.closed and not src_c.closed
        assert src_b2.read(1)[0, 0] == 1
    assert src_b2.closed and src_c.closed and len(pool) == 0


def test_lru_matches_a_brute_force_reference(tmp_path: Path) -> None:
    paths = _rasters(tmp_path, 6)
    rng = random.Random(0)
    reference: list[Path] = []  # least recently used first
    handles: dict[Path, rasterio.io.DatasetReader] = {}
    with RasterPool(max_open=3) as pool:
        for _ in range(200):
            path = rng.choice(paths)
            handles[path] = pool.get(path)
            if path in reference:
                reference.remove(path)
            reference.append(path)
            del reference[:-3]
            assert {p for p, h in handles.items() if not h.closed} == set(reference)
            # Every dataset the pool returns reads its own file.
            assert handles[path].read(1)[0, 0] == paths.index(path)


def test_pool_belongs_to_its_thread(tmp_path: Path) -> None:
    (path,) = _rasters(tmp_path, 1)
    grid = Grid.from_raster(path)
    errors: list[BaseException] = []
    values: list[int] = []

    def other_thread(pool: RasterPool) -> None:
        try:
            pool.get(path)
        except PoolThreadError as err:
            errors.append(err)
        with RasterPool() as own:  # one pool per thread works
            values.append(int(read_on_grid(own.get(path), grid)[0, 0, 0]))

    with RasterPool() as pool:
        pool.get(path)
        thread = threading.Thread(target=other_thread, args=(pool,), name="reader-2")
        thread.start()
        thread.join(30)
        assert len(pool) == 1  # the foreign call opened nothing
    assert len(errors) == 1 and "reader-2" in str(errors[0]) and str(path) in str(errors[0])
    assert values == [0]


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_max_open_must_be_positive(bad: object) -> None:
    with pytest.raises(ArgumentError, match="max_open"):
        RasterPool(max_open=bad)  # type: ignore[arg-type]
