"""Shared fixtures: a catalog of the sample archive, a test layout, a reference dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from decloud.archive import Archive
from decloud.datasets import DatasetPlan, PlanOptions, WriteOptions, plan_dataset, write_dataset
from decloud.index.catalog import Catalog
from decloud.layouts import Layout, load_layout
from tests.conftest import ARCHIVE

# OS2-like, with windows narrow enough for T31UFS's one month (April 2023).
LAYOUT_YAML = """\
name: os2-test
description: t-1, t (cloudy), t+1 S2+S1 and a clear target, for April 2023 on T31UFS
acquisitions:
  tm1:
    window_hours: [-240, -48]
    s2: {cloud: [0, 100]}
    s1: {max_gap_hours: 72}
  t:
    reference: true
    s2: {cloud: [{randint: [1, 5]}, 100]}
    s1: {max_gap_hours: 72}
  target:
    window_hours: [-120, 120]
    s2: {cloud: [0, 0]}
  tp1:
    window_hours: [48, 240]
    s2: {cloud: [0, 100]}
    s1: {max_gap_hours: 72}
"""

#: T31UFS has only B04, B08 (10 m) and B11 (20 m).
BANDS: dict[str, Any] = {"bands10": ("B04", "B08"), "bands20": ("B11",)}
#: The writer settings of the reference dataset.
WRITE = WriteOptions(patch_size=32, shard_size=3, progress=False, **BANDS)
TILE = "T31UFS"
N = 8
SEED = 7


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    folder = tmp_path_factory.mktemp("catalog") / "cat"
    with Catalog.create(folder, patch_size=32) as cat:
        report = cat.add(Archive.from_root(ARCHIVE))
        assert not report.failed
        yield cat


@pytest.fixture(scope="session")
def layout_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("layout") / "os2-test.yaml"
    path.write_text(LAYOUT_YAML)
    return path


@pytest.fixture(scope="session")
def layout(layout_file: Path) -> Layout:
    return load_layout(layout_file)


@pytest.fixture(scope="session")
def plan(catalog: Catalog, layout: Layout) -> DatasetPlan:
    return plan_dataset(catalog, layout, PlanOptions(N, (TILE,), seed=SEED))


@pytest.fixture(scope="session")
def reference(catalog: Catalog, plan: DatasetPlan,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset written in one go, in this process (do not modify it)."""
    return write_dataset(catalog, plan, tmp_path_factory.mktemp("ref") / "ds", WRITE)
