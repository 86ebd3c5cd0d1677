"""Per-patch statistics and the persistent catalog with its R-tree."""

from __future__ import annotations

import dataclasses
import multiprocessing
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from decloud.archive import Archive
from decloud.constants import MaskClass
from decloud.errors import GridError, NoProductError
from decloud.index import Catalog, CatalogError, PatchGrid, s1_patch_stats, s2_patch_stats
from decloud.products import open_product
from tests.conftest import ARCHIVE, S1_VV, SAFE_PB0400, THEIA


def test_s2_stats_match_the_mask() -> None:
    product = open_product(SAFE_PB0400)
    patches = PatchGrid(product.grid(), 32)  # 120 px: 4 x 4 patches, the last partial
    stats = s2_patch_stats(product, patches)
    assert stats["cloud"].shape == (4, 4)
    layer = product.mask(patches.mask_grid())  # 60 x 60 at 20 m
    block = layer[:16, 16:32]
    valid = block != MaskClass.NODATA
    cloud = np.isin(block, (MaskClass.CLOUD, MaskClass.CIRRUS)) & valid
    assert stats["cloud"][0, 1] == round(100 * cloud.sum() / valid.sum())
    # The last column of patches is 8 of its 32 px outside the tile: a quarter nodata.
    assert (stats["nodata"][1:3, 3] == 25).all()


def test_theia_edge_is_nodata_and_s1_stats() -> None:
    stats = s2_patch_stats(open_product(THEIA), PatchGrid(open_product(THEIA).grid(), 20))
    assert stats["nodata"][0, 0] == 60  # 12 of the first 20 columns are outside the swath
    s1 = open_product(S1_VV)
    nodata = s1_patch_stats(s1, PatchGrid(open_product(SAFE_PB0400).grid(), 32))["nodata"]
    assert nodata[:3, :3].max() == 0


def test_patch_size_must_fit_mask_grid() -> None:
    with pytest.raises(GridError, match="patch size"):
        PatchGrid(open_product(THEIA).grid(), 33)


def test_build_add_reopen(tmp_path: Path) -> None:
    archive = Archive.from_root(ARCHIVE)
    with Catalog.create(tmp_path / "cat", patch_size=32) as catalog:
        report = catalog.add(archive)
        assert len(report.added) == 31 and not report.failed
        assert catalog.count("S2") == 19 and catalog.count("S1") == 12
        again = catalog.add(archive)
        assert again.added == [] and len(again.skipped) == 31
    with pytest.raises(CatalogError, match="exists already"):
        Catalog.create(tmp_path / "cat")
    with Catalog.open(tmp_path / "cat") as catalog:
        records = catalog.records("T31UFS", "S2")
        assert [r.acquired for r in records] == sorted(r.acquired for r in records)
        clouds = catalog.stats([r.id for r in records], "cloud")
        assert clouds.shape == (12, 3, 2)
        product = records[5].open()
        direct = s2_patch_stats(product, PatchGrid(catalog.tile_grid("T31UFS"), 32))  # type: ignore[arg-type]
        np.testing.assert_array_equal(clouds[5], direct["cloud"])
        # R-tree queries: space (lon/lat) and time.
        belgium = catalog.search((4.9, 51.1, 5.1, 51.3))
        assert {r.tile for r in catalog.records(ids=belgium)} == {"T31UFS"}
        april = catalog.search(None, datetime(2023, 4, 10, tzinfo=UTC),
                               datetime(2023, 4, 20, 23, tzinfo=UTC))
        assert len(april) == 5 + 4  # S2 on 10, 12, 15, 17, 20; S1 on 12, 15, 17, 20
        with pytest.raises(NoProductError, match="empty date range"):
            catalog.search(None, datetime(2023, 5, 1, tzinfo=UTC), datetime(2023, 4, 1, tzinfo=UTC))


def test_rtree_rebuilt_when_out_of_sync(tmp_path: Path) -> None:
    with Catalog.create(tmp_path / "cat", patch_size=32) as catalog:
        catalog.add(Archive.scan(ARCHIVE / "S2" / "T33TVM"))
    for suffix in (".idx", ".dat"):
        (tmp_path / "cat" / f"rtree{suffix}").unlink()
    with Catalog.open(tmp_path / "cat") as catalog:
        assert len(catalog.search()) == 5


def _add_tile(folder: str, root: str) -> None:
    with Catalog.open(folder) as catalog:
        catalog.add(Archive.scan(Path(root)))


def test_two_processes_adding_at_once(tmp_path: Path) -> None:
    roots = []
    for tile in ("T31UFS", "T33TVM"):
        root = tmp_path / tile
        shutil.copytree(ARCHIVE / "S2" / tile, root / tile)
        roots.append(str(root))
    Catalog.create(tmp_path / "cat", patch_size=32).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_tile, args=(str(tmp_path / "cat"), r)) for r in roots]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Catalog.open(tmp_path / "cat") as catalog:
        assert catalog.count("S2") == 17
        assert len(catalog.search()) == 17
        assert catalog.tiles() == ["T31UFS", "T33TVM"]


def test_partial_last_row_counts_outside_as_nodata() -> None:
    product = open_product(SAFE_PB0400)  # 120 x 120 px: a last row of patches 24/32 inside
    stats = s2_patch_stats(product, PatchGrid(product.grid(), 32))
    assert (stats["nodata"][3, :3] == 25).all() and stats["nodata"][3, 3] >= 43
    s1 = s1_patch_stats(open_product(S1_VV), PatchGrid(product.grid(), 32))["nodata"]
    assert (s1[3, :3] == 25).all()


def test_a_product_without_tile_is_refused(tmp_path: Path) -> None:
    product = open_product(THEIA)
    arrays = s2_patch_stats(product, PatchGrid(product.grid(), 20))
    with Catalog.create(tmp_path / "cat", patch_size=20) as catalog:
        with pytest.raises(CatalogError, match="tile is unknown") as err:
            catalog.add_stats(dataclasses.replace(product, tile=None), arrays)
        assert err.value.field == "tile" and err.value.path == str(THEIA)
        assert catalog.count("S2") == 0 and catalog.tiles() == []
        catalog.add_stats(product, arrays)
        assert catalog.count("S2") == 1 and catalog.tiles() == ["T33TVM"]
