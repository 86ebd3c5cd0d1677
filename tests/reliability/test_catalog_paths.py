"""A catalog built from a relative ``--archive`` works from any working directory.

The catalog stores absolute, normalised paths; a catalog of an earlier decloud that
stored relative ones is refused with a message that says so, naming the path.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from decloud.cli.main import cli
from decloud.errors import CatalogError
from decloud.index.catalog import Catalog
from tests.conftest import ARCHIVE
from tests.training.conftest import LAYOUT


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog built with ``--archive arch`` (relative) from ``tmp_path/build``."""
    build = tmp_path / "build"
    shutil.copytree(ARCHIVE, build / "arch")
    monkeypatch.chdir(build)
    result = run("index", "build", "--archive", "arch", "--catalog", "cat",
                 "--patch-size", "32")
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return build / "cat"


def test_the_catalog_stores_absolute_paths(built: Path) -> None:
    with Catalog.open(built) as catalog:
        records = catalog.records()
    assert records and all(Path(r.path).is_absolute() for r in records)
    assert all(Path(f).is_absolute() and Path(f).exists() for r in records for f in r.files)
    assert all(r.path.startswith(str(built.parent / "arch") + "/") for r in records)


def test_layout_count_and_dataset_create_work_from_another_directory(
        built: Path, tmp_path: Path) -> None:
    result = run("layout", "count", str(LAYOUT), "--catalog", str(built), "--tile", "T31UFS")
    assert result.exit_code == 0, result.output
    total = int(result.output.strip().splitlines()[-1].split()[-1])
    assert total > 0
    out = tmp_path / "ds"
    result = run("dataset", "create", "--catalog", str(built), "--layout", str(LAYOUT),
                 "--tile", "T31UFS", "--samples", "4", "--patch-size", "32",
                 "--bands10", "B04,B08", "--bands20", "B11", "--split-block", "1",
                 "--split-buffer", "0", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(s["samples"] for s in manifest["splits"].values()) == 4


def test_a_rerun_of_index_add_from_elsewhere_adds_nothing_twice(built: Path) -> None:
    # The same archive named by its absolute path: every product is already known.
    result = run("index", "add", "--archive", str(built.parent / "arch"), "--catalog",
                 str(built))
    assert result.exit_code == 0, result.output
    assert "added 0 product(s), 31 already indexed, 0 failed" in result.output


def test_a_catalog_with_relative_paths_is_refused_clearly(built: Path) -> None:
    db = sqlite3.connect(built / "catalog.sqlite")
    first = db.execute("SELECT path FROM products ORDER BY id LIMIT 1").fetchone()[0]
    relative = str(Path(first).relative_to(built.parent))
    db.execute("UPDATE products SET path = ? WHERE path = ?", (relative, first))
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="relative to the folder it was built") as caught:
        Catalog.open(built)
    assert caught.value.path == str(built) and relative in str(caught.value)
    result = run("layout", "count", str(LAYOUT), "--catalog", str(built))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "rebuild it" in result.output


def test_a_tile_not_in_the_catalog_is_one_line(built: Path) -> None:
    result = run("layout", "count", str(LAYOUT), "--catalog", str(built), "--tile", "T31TCJ")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output  # no table header before it
    assert "tile T31TCJ is not in the catalog (tiles: T29UPU, T31UFS" in result.output
