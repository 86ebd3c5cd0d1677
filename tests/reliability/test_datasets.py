"""Datasets and the bad-input matrix: layout limits on the sample patch, empty layouts
explained, no 20 m key on request, truncated shards, unreachable schedulers.

Every case checks the exit code (CLI), that the message names the file or address and
the cause, and that nothing partial is left.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from decloud.archive import Archive
from decloud.cli.main import cli
from decloud.constants import MASK_NODATA, S1_NODATA
from decloud.datasets import (
    PlanOptions,
    TrainingDataset,
    WriteOptions,
    plan_dataset,
    write_dataset,
)
from decloud.errors import DatasetError, SchedulerError
from decloud.index.catalog import Catalog
from decloud.index.search import TileStack
from decloud.keys import KeyKind, parse_key
from decloud.layouts import load_layout
from tests.conftest import ARCHIVE
from tests.reliability.conftest import truncate

ROOT = Path(__file__).parents[2]
#: The layout and settings of the dataset of pipelines/demo.sh.
DEMO_LAYOUT = ROOT / "pipelines" / "demo-os2-belgium.yaml"
DEMO_PLAN = {"tiles": ("T31UFS",), "seed": 0, "splits": {"train": 0.75, "valid": 0.25},
             "split_block": 1, "split_buffer": 0}
DEMO_WRITE = {"shard_size": 16, "progress": False, "bands10": ("B04", "B08"),
              "bands20": ("B11",)}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """The demo's catalog: the sample archive in 16 px cells."""
    folder = tmp_path_factory.mktemp("demo") / "catalog"
    with Catalog.create(folder, patch_size=16) as cat:
        assert not cat.add(Archive.from_root(ARCHIVE)).failed
        yield cat


@pytest.fixture(scope="module")
def demo_dataset(catalog: Catalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pipelines/demo.sh's dataset step: 48 samples, 32 px patches on 16 px cells."""
    code = run("dataset", "create", "--catalog", str(catalog.folder), "--layout",
               str(DEMO_LAYOUT), "--tile", "T31UFS", "--samples", "48", "--seed", "0",
               "--split", "train=0.75", "--split", "valid=0.25", "--split-block", "1",
               "--split-buffer", "0", "--patch-size", "32", "--bands10", "B04,B08",
               "--bands20", "B11", "--out", str(tmp_path_factory.mktemp("ds") / "ds"),
               "--quiet")
    assert code.exit_code == 0, code.output
    return Path(code.output.strip().splitlines()[-1].removeprefix("dataset: "))


# Layout limits hold on the sample patch ---------------------------------------------


def test_the_demo_dataset_has_no_nodata_beyond_the_layout(demo_dataset: Path) -> None:
    layout = load_layout(DEMO_LAYOUT)
    total = 0
    for split in ("train", "valid"):
        data = TrainingDataset(demo_dataset, split)
        total += len(data)
        for key in data.keys:
            kind, acquisition = parse_key(key)
            if kind not in (KeyKind.S2_MASK, KeyKind.S1) or acquisition is None:
                continue
            spec = getattr(layout.acquisitions[acquisition], kind.value.split("_")[0])
            arrays = np.stack([data[i][key] for i in range(len(data))])
            if kind is KeyKind.S2_MASK:
                missing = (arrays == MASK_NODATA).mean(axis=(1, 2, 3))
            else:
                missing = (arrays == S1_NODATA).any(axis=-1).mean(axis=(1, 2))
            # Before: 21 % of the demo's pixels were nodata with nodata_max 0.
            assert 100 * missing.max() <= spec.nodata_max, (split, key)
    assert total == 48


def test_a_plan_checked_on_cells_does_not_make_larger_patches(catalog: Catalog,
                                                              tmp_path: Path) -> None:
    layout = load_layout(DEMO_LAYOUT)
    cells = plan_dataset(catalog, layout, PlanOptions(12, **DEMO_PLAN))  # type: ignore[arg-type]
    assert cells.checked_patch_size == 16
    with pytest.raises(DatasetError, match=r"on 16 px patches, not on 32 px") as caught:
        write_dataset(catalog, cells, tmp_path / "ds", WriteOptions(patch_size=32,
                                                                    **DEMO_WRITE))
    assert "patch_size=32" in caught.value.message and not (tmp_path / "ds").exists()


def test_patches_larger_than_the_tile_are_refused_with_the_reason(catalog: Catalog,
                                                                  tmp_path: Path) -> None:
    # The sample tiles are about 1 km wide: a 256 px patch is mostly past their edges.
    # Before: `dataset create --patch-size 256` wrote samples 94 % nodata.
    ran = run("dataset", "create", "--catalog", str(catalog.folder), "--layout",
              str(DEMO_LAYOUT), "--tile", "T31UFS", "--samples", "8", "--patch-size", "256",
              "--bands10", "B04,B08", "--bands20", "B11", "--out", str(tmp_path / "ds"))
    assert ran.exit_code == 1
    assert str(DEMO_LAYOUT) in ran.output and "with 256 px patches" in ran.output
    assert "nodata <= 0.0 % on any patch, as acquisition t asks" in ran.output
    assert not (tmp_path / "ds").exists()


# Empty layouts say which acquisition finds nothing ------------------------------------


def test_an_s2_only_tile_says_there_is_no_s1(catalog: Catalog, tmp_path: Path) -> None:
    # T33TVM has THEIA products and no S1 image.
    layout = load_layout(DEMO_LAYOUT)
    with pytest.raises(DatasetError) as caught:
        plan_dataset(catalog, layout, PlanOptions(4, ("T33TVM",)))
    message = caught.value.message
    for name in ("tm1", "t", "tp1"):
        assert (f"the catalog holds no S1 image for tile T33TVM; acquisition {name} needs s1"
                in message)
    assert "windows and cloud ranges" not in message
    ran = run("layout", "count", str(DEMO_LAYOUT), "--catalog", str(catalog.folder),
              "--tile", "T33TVM")
    assert ran.exit_code == 0, ran.output
    assert ("no tuple: the catalog holds no S1 image for tile T33TVM; acquisition t needs s1"
            in ran.output)
    ran = run("dataset", "create", "--catalog", str(catalog.folder), "--layout",
              str(DEMO_LAYOUT), "--tile", "T33TVM", "--samples", "4", "--patch-size", "16",
              "--out", str(tmp_path / "ds"))
    assert ran.exit_code == 1 and "acquisition t needs s1" in ran.output


def test_a_cloud_range_no_product_meets_is_named(catalog: Catalog, tmp_path: Path) -> None:
    # A cloud percentage that no clean cell of the tile has.
    stack = TileStack.load(catalog, "T31UFS")
    present = set(stack.s2_cloud[stack.s2_nodata == 0].tolist())
    value = next(v for v in range(100, 0, -1) if v not in present)
    text = DEMO_LAYOUT.read_text().replace("s2: {cloud: [0, 10]}",
                                           f"s2: {{cloud: [{value}, {value}]}}")
    path = tmp_path / "impossible.yaml"
    path.write_text(text)
    with pytest.raises(DatasetError, match=rf"has cloud in \[{value}, {value}\] % and nodata "
                                           r"<= 0.0 % on any patch, as acquisition target "
                                           r"asks"):
        plan_dataset(catalog, load_layout(path), PlanOptions(4, ("T31UFS",)))


# No 20 m key on request --------------------------------------------------------------


def test_bands20_empty_means_no_20m_key(catalog: Catalog, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ran = run("dataset", "create", "--catalog", str(catalog.folder), "--layout",
              str(DEMO_LAYOUT), "--tile", "T31UFS", "--samples", "4", "--patch-size", "16",
              "--bands10", "B04,B08", "--bands20", "", "--out", str(out), "--quiet")
    # Before: --bands20 "" was ignored, and the default 20 m bands failed on B05.
    assert ran.exit_code == 0, ran.output
    data = TrainingDataset(out)
    assert data.keys and not [k for k in data.keys if k.startswith("s2_20m_")]
    assert data.manifest["keys"]["s2_t"]["bands"] == ["B04", "B08"]
    # A reader that needs a 20 m key is told the dataset has none.
    with pytest.raises(DatasetError, match=r"no key 's2_20m_t' \(keys: s2_tm1"):
        data.sample(0, ["s2_20m_t"])


# Truncated shards --------------------------------------------------------------------


@pytest.fixture
def broken_copy(demo_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the demo dataset with its first train shard cut in half."""
    copy = tmp_path / "ds"
    shutil.copytree(demo_dataset, copy)
    shard = copy / "shards" / "train-00000.npz"
    truncate(shard)
    return copy, shard


def test_a_truncated_shard_is_named(broken_copy: tuple[Path, Path], tmp_path: Path) -> None:
    folder, shard = broken_copy
    data = TrainingDataset(folder)
    with pytest.raises(DatasetError, match="shard is truncated or corrupt") as caught:
        data[0]
    assert caught.value.path == str(shard)
    png = tmp_path / "p.png"
    ran = run("dataset", "preview", str(folder), str(png))
    # Before: a zipfile.BadZipFile traceback that did not name the shard.
    assert ran.exit_code == 1
    assert ran.output.startswith("Error: DatasetError: ") and str(shard) in ran.output
    assert "Traceback" not in ran.output and not png.exists()


def test_training_data_loading_names_the_truncated_shard(
        broken_copy: tuple[Path, Path]) -> None:
    from decloud.models import build, load_config
    from decloud.training import Batches

    folder, shard = broken_copy
    # The demo's model, trained on the demo's dataset.
    _, spec = build(load_config(ROOT / "pipelines" / "demo-msop-tiny.yaml"))
    data = TrainingDataset(folder)
    batches = Batches(data, spec, 4, "t")
    with pytest.raises(DatasetError, match="shard is truncated or corrupt") as caught:
        batches[0]
    assert caught.value.path == str(shard)


# Unreachable schedulers --------------------------------------------------------------


def test_an_unreachable_scheduler_fails_fast(catalog: Catalog, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    address = "tcp://127.0.0.1:9"  # the discard port: nothing listens there
    start = time.monotonic()
    ran = run("dataset", "create", "--catalog", str(catalog.folder), "--layout",
              str(DEMO_LAYOUT), "--tile", "T31UFS", "--samples", "4", "--patch-size", "16",
              "--bands10", "B04,B08", "--bands20", "B11", "--scheduler", address,
              "--scheduler-timeout", "2", "--out", str(out), "--quiet")
    elapsed = time.monotonic() - start
    # Before: an OSError traceback after 30 s.
    assert ran.exit_code == 1 and elapsed < 15
    (line,) = [x for x in ran.output.splitlines() if "Error" in x]
    assert line.startswith("Error: SchedulerError") and address in line and "within 2 s" in line
    assert not out.exists()
    with pytest.raises(SchedulerError, match="nonsense"):
        plan = plan_dataset(catalog, load_layout(DEMO_LAYOUT),
                            PlanOptions(4, ("T31UFS",), patch_size=16))
        write_dataset(catalog, plan, out, WriteOptions(patch_size=16, scheduler="nonsense",
                                                       scheduler_timeout=1, **DEMO_WRITE))
    assert not out.exists()
    with pytest.raises(DatasetError, match="timeout must be positive"):
        WriteOptions(scheduler_timeout=0)
