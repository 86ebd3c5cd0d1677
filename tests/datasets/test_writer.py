"""Writing datasets: the format read with numpy only, values, resume, refusals, Dask."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

import decloud.datasets.writer as writer
from decloud.constants import DEM_NODATA, S1_POLARISATIONS, S2_BANDS, MaskClass
from decloud.datasets import (
    DatasetPlan,
    PlanOptions,
    TrainingDataset,
    WriteOptions,
    plan_dataset,
    write_dataset,
)
from decloud.errors import DatasetError
from decloud.index.catalog import Catalog
from decloud.keys import encode_s2
from decloud.layouts import Layout, load_layout
from decloud.products import Dem, S1Product, S2Product
from decloud.s1 import encode_prepared
from tests.conftest import DEM, file_identity
from tests.datasets.conftest import BANDS, SEED, TILE, WRITE, N


def shard_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "shards").glob("*.npz"))}


def test_format_is_readable_with_numpy_only(reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["format"] == {"name": "decloud-dataset", "version": 1}
    assert manifest["splits"]["train"]["samples"] == N
    assert manifest["seed"] == SEED and manifest["layout"]["name"] == "os2-test"
    assert manifest["tiles"][TILE]["width"] == 60
    keys = manifest["keys"]
    assert list(keys) == ["s2_tm1", "s2_20m_tm1", "s2_mask_tm1", "s1_tm1", "s2_t", "s2_20m_t",
                          "s2_mask_t", "s1_t", "s2_target", "s2_20m_target", "s2_mask_target",
                          "s2_tp1", "s2_20m_tp1", "s2_mask_tp1", "s1_tp1"]
    assert keys["s2_t"]["bands"] == ["B04", "B08"] and keys["s2_t"]["nodata"] == -10000
    assert keys["s2_20m_t"]["shape"] == [16, 16, 1] and keys["s1_t"]["bands"] == ["VV", "VH"]
    total = 0
    for shard in manifest["splits"]["train"]["shards"]:
        with np.load(reference / shard["file"], allow_pickle=False) as npz:
            assert set(npz.files) == set(keys) | {"meta"}
            for key, spec in keys.items():
                array = npz[key]
                assert array.dtype == np.dtype(spec["dtype"])
                assert array.shape == (shard["samples"], *spec["shape"])
            metas = [json.loads(m) for m in npz["meta"]]
        assert [m["index"] for m in metas] == list(range(total, total + shard["samples"]))
        total += shard["samples"]
        polygon = metas[0]["footprint"]["epsg4326"]
        assert polygon["type"] == "Polygon" and 4.9 < polygon["coordinates"][0][0][0] < 5.2
    assert total == N
    plan = DatasetPlan.load(reference / "plan.json")
    assert len(plan) == N


def test_values_equal_direct_reads(reference: Path, catalog: Catalog) -> None:
    data = TrainingDataset(reference)
    grid = catalog.tile_grid(TILE)
    assert grid is not None
    for index in (0, len(data) - 1):
        sample, meta = data[index], data.meta(index)
        w = meta["window"]
        window = Window(w["col_off"], w["row_off"], 32, 32)
        window20 = Window(w["col_off"] // 2, w["row_off"] // 2, 16, 16)
        for acq in ("t", "target"):
            record = catalog.records(ids=[meta["acquisitions"][acq]["s2"]["id"]])[0]
            s2 = record.open()
            assert isinstance(s2, S2Product)
            bands10 = s2.read(BANDS["bands10"], grid, window)
            np.testing.assert_array_equal(sample[f"s2_{acq}"],
                                          np.moveaxis(encode_s2(bands10), 0, -1))
            bands20 = s2.read(BANDS["bands20"], grid.at_resolution(20), window20)
            np.testing.assert_array_equal(sample[f"s2_20m_{acq}"],
                                          np.moveaxis(encode_s2(bands20), 0, -1))
            # Nodata where the product mask or any band read (10 m or 20 m) says so.
            mask = s2.mask(grid, window)
            mask[np.isnan(bands10).any(axis=0)] = MaskClass.NODATA
            mask[np.isnan(bands20).any(axis=0).repeat(2, axis=0).repeat(2, axis=1)] = \
                MaskClass.NODATA
            np.testing.assert_array_equal(sample[f"s2_mask_{acq}"][..., 0], mask)
        record = catalog.records(ids=[meta["acquisitions"]["t"]["s1"]["id"]])[0]
        s1 = record.open()
        assert isinstance(s1, S1Product)
        expected = encode_prepared(s1.read(S1_POLARISATIONS, grid, window, unit="linear"))
        np.testing.assert_array_equal(sample["s1_t"], np.moveaxis(expected, 0, -1))
        assert (sample["s2_t"] != -10000).any()


def test_resume_after_a_crash_gives_the_same_bytes(catalog: Catalog, plan: DatasetPlan,
                                                   reference: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"

    def crash(written: int) -> None:
        raise DatasetError(f"simulated crash after {written} shard(s)")

    # The test hook is a module attribute: write_dataset's signature has no test argument.
    monkeypatch.setattr(writer, "_after_shard", crash)
    with pytest.raises(DatasetError, match="simulated crash after 1 shard"):
        write_dataset(catalog, plan, out, WRITE)
    monkeypatch.setattr(writer, "_after_shard", None)
    assert not (out / "manifest.json").exists()
    assert len(shard_files(out)) == 1
    with pytest.raises(DatasetError, match="interrupted"):
        TrainingDataset(out)
    first = out / "shards" / "train-00000.npz"
    kept = file_identity(first)
    write_dataset(catalog, plan, out, WRITE)
    assert file_identity(first) == kept  # a complete shard is kept, not rewritten
    assert shard_files(out) == shard_files(reference)
    # A lost shard (and manifest) is written again, the others are kept.
    (out / "shards" / "train-00001.npz").unlink()
    (out / "manifest.json").unlink()
    write_dataset(catalog, plan, out, WRITE)
    assert shard_files(out) == shard_files(reference)
    assert file_identity(first) == kept
    # A truncated shard is not complete: it is written again.
    (out / "shards" / "train-00002.npz").write_bytes(b"PK\x03\x04broken")
    (out / "manifest.json").unlink()
    write_dataset(catalog, plan, out, WRITE)
    assert shard_files(out) == shard_files(reference)
    assert len(TrainingDataset(out)) == N


def test_another_plan_is_refused_unless_overwrite(catalog: Catalog, layout: Layout,
                                                  reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    other = plan_dataset(catalog, layout, PlanOptions(N, (TILE,), seed=SEED + 1))
    before = shard_files(out)
    with pytest.raises(DatasetError, match="its plan"):
        write_dataset(catalog, other, out, WRITE)
    with pytest.raises(DatasetError, match="writer settings"):
        write_dataset(catalog, DatasetPlan.load(out / "plan.json"), out,
                      replace(WRITE, shard_size=4))
    assert shard_files(out) == before
    write_dataset(catalog, other, out, replace(WRITE, overwrite=True))
    assert DatasetPlan.load(out / "plan.json").seed == SEED + 1
    assert shard_files(out) != before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        write_dataset(catalog, other, foreign, replace(WRITE, overwrite=True))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_errors_come_before_any_write(catalog: Catalog, plan: DatasetPlan,
                                      tmp_path: Path) -> None:
    out = tmp_path / "ds"
    # The default bands: T31UFS has no B02.
    settings = WriteOptions(patch_size=WRITE.patch_size, shard_size=WRITE.shard_size,
                            progress=False)
    with pytest.raises(DatasetError, match=r"S2A_MSIL2A_2023.*has no band B02") as err:
        write_dataset(catalog, plan, out, settings)
    assert err.value.field == "B02" and ".SAFE" in str(err.value.path)
    with pytest.raises(DatasetError, match="multiple of 4"):
        write_dataset(catalog, plan, out, replace(WRITE, patch_size=34))
    dem_plan = DatasetPlan.from_dict({**plan.to_dict(), "resolved_layout": {
        **plan.resolved_layout, "dem": True}})
    with pytest.raises(DatasetError, match=r"DEM.*T31UFS"):
        write_dataset(catalog, dem_plan, out, WRITE)
    assert not out.exists()


def test_dem_and_default_bands(catalog: Catalog, tmp_path: Path) -> None:
    (tmp_path / "dem.yaml").write_text(
        "name: dem-test\nacquisitions:\n  t:\n    reference: true\n    s2: {cloud: [0, 100]}\n"
        "  target:\n    window_hours: [-500, 500]\n    s2: {cloud: [0, 0]}\ndem: true\n")
    plan = plan_dataset(catalog, load_layout(tmp_path / "dem.yaml"),
                        PlanOptions(3, ("T33TVM",), seed=0, patch_size=48))
    out = write_dataset(catalog, plan, tmp_path / "ds",
                        WriteOptions(patch_size=48, shard_size=8, progress=False))
    data = TrainingDataset(out)
    assert data.keys[-1] == "dem" and data.manifest["tiles"]["T33TVM"]["dem"] == str(DEM)
    assert data.manifest["keys"]["s2_t"]["bands"] == list(S2_BANDS[:4])
    assert data.manifest["keys"]["s2_20m_t"]["bands"] == list(S2_BANDS[4:])
    grid = catalog.tile_grid("T33TVM")
    assert grid is not None
    meta, sample = data.meta(0), data[0]
    w = meta["window"]
    window = Window(w["col_off"], w["row_off"], 48, 48)
    assert sample["dem"].dtype == np.float32 and sample["dem"].shape == (48, 48, 1)
    inside = sample["dem"][..., 0] != DEM_NODATA
    assert inside.any()
    # Where the window is inside the tile, the DEM is the direct read.
    clipped = Window(max(w["col_off"], 0), max(w["row_off"], 0), 1, 1)
    direct = Dem.open(DEM).read(grid, clipped)
    r, c = clipped.row_off - window.row_off, clipped.col_off - window.col_off
    assert sample["dem"][r, c, 0] == pytest.approx(direct[0, 0])


def test_two_dask_workers_write_the_same_dataset(catalog: Catalog, plan: DatasetPlan,
                                                 reference: Path, tmp_path: Path) -> None:
    out = write_dataset(catalog, plan, tmp_path / "ds", replace(WRITE, workers=2))
    assert shard_files(out) == shard_files(reference)
    with zipfile.ZipFile(out / "shards" / "train-00000.npz") as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_a_running_scheduler_writes_the_same_dataset(catalog: Catalog, plan: DatasetPlan,
                                                     reference: Path, tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        out = write_dataset(catalog, plan, tmp_path / "ds",
                            replace(WRITE, scheduler=cluster.scheduler_address))
    assert shard_files(out) == shard_files(reference)


KILLER = """
import os, signal, sys
from pathlib import Path
from decloud.datasets import DatasetPlan, WriteOptions, write_dataset
import decloud.datasets.writer as writer
from decloud.index.catalog import Catalog

done = []
original = writer._write_shard
def write_then_die(job):
    name = original(job)
    done.append(name)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a power cut
    return name
writer._write_shard = write_then_die
catalog = Catalog.open(sys.argv[1])
write_dataset(catalog, DatasetPlan.load(Path(sys.argv[2])), Path(sys.argv[3]),
              WriteOptions(patch_size=32, shard_size=3, progress=False, bands10=("B04", "B08"),
                           bands20=("B11",)))
"""


def test_killed_process_resumes_to_the_same_dataset(catalog: Catalog, plan: DatasetPlan,
                                                    reference: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    plan_file = tmp_path / "plan.json"
    plan.save(plan_file)
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(catalog.folder), str(plan_file),
                           str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (out / "manifest.json").exists() and len(shard_files(out)) == 2
    write_dataset(catalog, plan, out, WRITE)
    assert shard_files(out) == shard_files(reference)
    assert len(TrainingDataset(out)) == N



def test_dataset_equals_the_one_written_through_floats(
        catalog: Catalog, plan: DatasetPlan, reference: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every array equals, byte for byte, the one written without the integer shortcut.

    Products storing the s2 encoding (THEIA) are read as their integers
    (``decloud.inputs._Reader.read_encoded``, tested on THEIA in tests/test_inputs.py);
    here the archive's SAFE products decline it, and the dataset must not change.
    """
    import decloud.inputs

    monkeypatch.setattr(decloud.inputs._Reader, "read_encoded", lambda self, *a: None)
    floats = write_dataset(catalog, plan, tmp_path / "floats", WRITE)
    compared = 0
    shards = sorted((reference / "shards").glob("*.npz"))
    for shard in shards:
        with np.load(shard) as ref, np.load(floats / "shards" / shard.name) as slow:
            assert sorted(ref.files) == sorted(slow.files)
            for name in ref.files:
                assert ref[name].tobytes() == slow[name].tobytes(), (shard.name, name)
                compared += 1
    keys = json.loads((reference / "manifest.json").read_text())["keys"]
    assert len(shards) == 3 and compared == 3 * (len(keys) + 1)  # the keys and the meta
