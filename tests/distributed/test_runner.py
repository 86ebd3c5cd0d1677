"""Series on real Dask clusters (2 worker processes): equal outputs, retries, failures.

The Belgian sample (tile T31UFS, six S2 dates from 2023-04-01 to 04-15) is run once
sequentially and on clusters; outputs must be the same bytes. What may differ between
two runs of the same series, sequential or not, is timing only, exactly:

* the COGs' ``DECLOUD_CREATED`` tag (the UTC second each file was written);
* the completion record's ``finished`` and ``timing`` entries;
* the STAC item's ``created`` property;
* the summary's ``seconds`` per date;
* and, when the two runs are in different folders, the folder in the paths.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from decloud.archive import Archive
from decloud.distributed import Execution, loads, portable, remove_temporaries, run_on_cluster
from decloud.errors import ArgumentError, DecloudError, InferenceError
from decloud.processors.timeseries import (
    DatePlan,
    GapFillDates,
    ModelDates,
    SeriesJob,
    SeriesOptions,
    run_series,
)
from tests.conftest import ARCHIVE

distributed = pytest.importorskip("distributed")

TILE = "T31UFS"
START, END = date(2023, 4, 1), date(2023, 4, 15)  # six dates
BANDS = ("B04", "B08")
CREATED = re.compile(rb"(DECLOUD_CREATED\">)[0-9T:+-]{25}")


@pytest.fixture(scope="module")
def archive() -> Archive:
    return Archive.from_root(ARCHIVE)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A running 2-worker LocalCluster (worker processes), reached by its address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local:
        yield local


def _options(execution: Execution | None = None, **kwargs: Any) -> SeriesOptions:
    from decloud.inference import EngineOptions

    return SeriesOptions(engine=EngineOptions(block_size=32), execution=execution, **kwargs)


def _content(path: Path, root: Path) -> Any:
    """A file's content with its timing entries (the module's list) taken out."""
    data = path.read_bytes()
    if path.suffix == ".tif":
        return CREATED.sub(rb"\1<created>", data)
    if path.suffix != ".json":
        return data
    text = json.loads(data.decode().replace(str(root), "<root>"))
    if path.name == "summary.json":
        for entry in text["dates"]:
            entry.pop("seconds")
    elif path.name.endswith(".stac.json"):
        text["properties"].pop("created")
    elif "finished" in text:
        text.pop("finished")
        text.pop("timing")
    return text


def _same_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name != "summary.md":  # its time column: summary.json is compared instead
            assert _content(a / name, a.parent) == _content(b / name, b.parent), name


def _sequential(archive: Archive, root: Path, method: Any = None, end: date = END) -> Path:
    out = root / "sequential" / "series"
    run_series(archive, TILE, START, end, method or GapFillDates(bands=BANDS), out,
               _options())
    return out


@pytest.mark.slow
def test_a_local_cluster_run_equals_the_sequential_run(archive: Archive, cluster: Any,
                                                         tmp_path: Path) -> None:
    expected = _sequential(archive, tmp_path)
    out = tmp_path / "cluster" / "series"
    reports = run_series(archive, TILE, START, END, GapFillDates(bands=BANDS), out,
                         _options(Execution(workers=2)))
    assert [r.status for r in reports] == ["done"] * 6
    assert (out / "collection.json").is_file()
    _same_outputs(expected, out)
    # A rerun (on the running cluster) resumes: every date is vouched for by its record.
    again = run_series(archive, TILE, START, END, GapFillDates(bands=BANDS), out,
                       _options(Execution(scheduler=cluster.scheduler_address)))
    assert [r.status for r in again] == ["complete"] * 6


@dataclass(frozen=True)
class _Stalling:
    """A block method that, on its first try for the date, signals then hangs."""

    inner: Any
    marker: Path

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, inputs: Mapping[str, Any]) -> Any:
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            time.sleep(120)  # the test kills this worker process meanwhile
        return self.inner(inputs)


@dataclass(frozen=True)
class _StallOnce:
    """Gap-filling whose run for ``day`` hangs on its first try (a worker to kill)."""

    day: date
    marker: Path
    inner: GapFillDates = field(default_factory=lambda: GapFillDates(bands=BANDS))
    name: str = "gapfill"

    def parameters(self) -> dict[str, Any]:
        return self.inner.parameters()

    def plan(self, *args: Any) -> DatePlan:
        plan = self.inner.plan(*args)
        if args[2].acquired.date() != self.day:
            return plan
        return DatePlan(_Stalling(plan.method, self.marker), plan.inputs, plan.target,
                        identity=plan.expected())


def _wait_for(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_retried_without_corrupt_or_duplicate_output(
        archive: Archive, cluster: Any, tmp_path: Path) -> None:
    expected = _sequential(archive, tmp_path)
    out = tmp_path / "cluster" / "series"
    marker = tmp_path / "stalled.pid"
    method = _StallOnce(date(2023, 4, 7), marker)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_series, archive, TILE, START, END, method, out,
                              _options(Execution(scheduler=cluster.scheduler_address)))
        pid = int(_wait_for(marker, 60))
        # Mid-task: the worker is inside the engine, its outputs open under temporary names.
        assert any(".tmp" in p.name for p in out.iterdir())
        with distributed.Client(cluster) as client:
            assert pid in client.run(os.getpid).values()  # a worker process, not ours
        os.kill(pid, signal.SIGKILL)
        reports = running.result(timeout=120)
    assert [r.status for r in reports] == ["done"] * 6
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert len(list(out.glob("*_gapfill.json"))) == 6
    _same_outputs(expected, out)


def _tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_1.yaml"
    path.write_text("name: tiny_1\nnetwork:\n  kind: unet\n  dates: [t]\n"
                    "  sources: {t: [s2]}\n  s2_bands: [B04, B08]\n  widths: [8, 16]\n")
    return path


@pytest.mark.slow
def test_the_model_is_loaded_once_per_worker(archive: Archive, cluster: Any,
                                             tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from decloud.processors.single_date import load_method

    method = ModelDates(load_method(_tiny_config(tmp_path), untrained=True, seed=3))
    end = date(2023, 4, 8)  # three dates on two workers
    expected = _sequential(archive, tmp_path, method, end)
    with distributed.Client(cluster) as client:
        before = client.run(loads)
        out = tmp_path / "cluster" / "series"
        reports = run_series(archive, TILE, START, end, method, out,
                             _options(Execution(scheduler=cluster.scheduler_address)))
        after = client.run(loads)
    assert [r.status for r in reports] == ["done"] * 3
    gained = {w: after[w] - before.get(w, 0) for w in after}
    assert set(gained.values()) <= {0, 1} and sum(gained.values()) >= 1
    # The worker's model (rebuilt from its seeded configuration) is the client's.
    _same_outputs(expected, out)


def _corrupt(archive_root: Path, day: str) -> None:
    band = next((archive_root / "S2" / TILE).glob(
        f"*_{day}T*/GRANULE/*/IMG_DATA/R10m/*_B04_10m.jp2"))
    band.write_bytes(band.read_bytes()[:200])


@pytest.mark.slow
def test_a_failing_product_is_reported_and_the_other_dates_finish(
        archive_copy: Path, cluster: Any, tmp_path: Path) -> None:
    _corrupt(archive_copy, "20230407")
    archive = Archive.from_root(archive_copy)
    out = tmp_path / "series"
    # One-day windows: each date reads its own product only.
    reports = run_series(archive, TILE, START, END, GapFillDates(window_days=1, bands=BANDS),
                         out, _options(Execution(scheduler=cluster.scheduler_address)))
    statuses = {r.label[:10]: r.status for r in reports}
    assert statuses.pop("2023-04-07") == "failed"
    assert set(statuses.values()) == {"done"}
    failed = next(r for r in reports if r.status == "failed")
    assert "B04" in (failed.reason or "") or "20230407" in (failed.reason or "")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 5, "complete": 0, "failed": 1}


def test_temporaries_of_an_output_are_removed_and_no_other_file(tmp_path: Path) -> None:
    out = tmp_path / "T31UFS_20230407_gapfill.tif"
    mine = [".T31UFS_20230407_gapfill.tif.0a1b2c3d.tmp.tif",
            ".T31UFS_20230407_gapfill_quality.tif.ffffffff.tmp.tif",
            ".T31UFS_20230407_gapfill.json.12345678.tmp.json",
            ".T31UFS_20230407_gapfill.stac.json.abcdef01.tmp.json",
            ".T31UFS_20230407_gapfill_quicklook.png.00000000.tmp.png"]
    others = ["T31UFS_20230407_gapfill.tif", ".T31UFS_20230410_gapfill.tif.0a1b2c3d.tmp.tif",
              ".T31UFS_20230407_gapfillx.tif.0a1b2c3d.tmp.tif", "summary.json",
              ".T31UFS_20230407_gapfill.tif.notahex.tmp.tif"]
    for name in mine + others:
        (tmp_path / name).write_text("x")
    removed = remove_temporaries(out)
    assert sorted(p.name for p in removed) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert remove_temporaries(tmp_path / "missing" / "x.tif") == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"workers": -1}, "workers"), ({"threads_per_worker": 0}, "threads_per_worker"),
    ({"scheduler": "tcp://h:1", "cluster_config": Path("c.yaml")}, "scheduler"),
    ({"scheduler": "tcp://h:1", "workers": 2}, "workers"),
    ({"gpus": True, "cluster_config": Path("c.yaml")}, "gpus"),
    # Threads shape a plain LocalCluster only: elsewhere they would be ignored.
    ({"gpus": True, "threads_per_worker": 2}, "threads_per_worker"),
    ({"scheduler": "tcp://h:1", "threads_per_worker": 2}, "threads_per_worker"),
    ({"cluster_config": Path("c.yaml"), "threads_per_worker": 2}, "threads_per_worker"),
])
def test_execution_refuses_inconsistent_settings(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ArgumentError) as caught:
        Execution(**kwargs)
    assert caught.value.field == field


def test_threads_per_worker_shape_a_local_cluster() -> None:
    assert Execution(workers=2, threads_per_worker=3).threads_per_worker == 3
    assert Execution(threads_per_worker=1, cluster_config=Path("c.yaml")).cluster_config


@pytest.mark.parametrize(("args", "message"), [
    (["--scheduler", "tcp://h:1", "--cluster-config", "{config}"], "--scheduler: "),
    (["--gpus", "--scheduler", "tcp://h:1"], "--gpus: "),
    (["--scheduler", "tcp://h:1", "--workers", "2"], "--workers: "),
    (["--gpus", "--threads-per-worker", "2"], "--threads-per-worker: "),
])
def test_the_cli_turns_execution_errors_into_usage_errors(args: list[str], message: str,
                                                          tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from decloud.cli.options import execution_from_options, execution_options

    @click.command()
    @execution_options
    def command(**kwargs: Any) -> None:
        execution_from_options(**kwargs)

    config = tmp_path / "c.yaml"
    config.write_text("kind: local\n")
    result = CliRunner().invoke(command, [a.format(config=config) for a in args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_execution_is_sequential_by_default() -> None:
    assert not Execution().distributed
    assert Execution(workers=2).distributed and Execution(scheduler="tcp://h:1").distributed
    assert Execution(gpus=True).distributed


def test_a_gpu_cluster_needs_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from decloud.distributed import open_client
    from decloud.errors import ArgumentError

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # one device given to this process
    with pytest.raises(ArgumentError, match="no GPU of its own"), \
            open_client(Execution(gpus=True, workers=2)):
        pass


def test_an_unreachable_scheduler_is_a_clear_error(archive: Archive, tmp_path: Path) -> None:
    from decloud.errors import SchedulerError

    with pytest.raises(SchedulerError, match="cannot reach the Dask scheduler"):
        run_series(archive, TILE, START, END, GapFillDates(bands=BANDS), tmp_path,
                   _options(Execution(scheduler="tcp://127.0.0.1:9", timeout=1)))


@pytest.mark.slow
def test_the_series_command_runs_on_a_scheduler(cluster: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from decloud.cli.main import cli

    out = tmp_path / "series"
    args = ["process", "series", "--archive", str(ARCHIVE), "--tile", TILE,
            "--start", "2023-04-01", "--end", "2023-04-08", "--method", "gapfill",
            "--bands", "B04,B08", "--block-size", "32", "--no-quicklooks", "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    assert "3 dates: 3 done" in result.output
    assert len(list(out.glob("*_gapfill.stac.json"))) == 3
    collection = json.loads((out / "collection.json").read_text())
    assert len([link for link in collection["links"] if link["rel"] == "item"]) == 3
    both = CliRunner().invoke(cli, [*args, "--scheduler", "tcp://h:1", "--cluster-config",
                                    str(out / "series.json")])
    assert both.exit_code != 0 and "not both" in both.output


@pytest.mark.slow
def test_a_monthly_synthesis_on_a_cluster_configuration_equals_the_sequential_one(
        archive: Archive, tmp_path: Path) -> None:
    from decloud.processors.monthly import MonthlyGapFill, monthly_synthesis

    config = tmp_path / "cluster.yaml"
    # kind: local is a LocalCluster of the configuration's shape (no batch system here).
    config.write_text("kind: local\ncores: 2\nmemory: 4GB\nprocesses: 2\n")
    method = MonthlyGapFill(bands=BANDS)
    expected = tmp_path / "sequential" / "monthly"
    monthly_synthesis(archive, TILE, 2023, method, expected, _options(), months=(1, 4, 5))
    out = tmp_path / "cluster" / "monthly"
    reports = monthly_synthesis(archive, TILE, 2023, method, out,
                                _options(Execution(cluster_config=config)), months=(1, 4, 5))
    assert [r.status for r in reports] == ["failed", "done", "done"]  # no January data
    assert "no S2 product" in (reports[0].reason or "")
    _same_outputs(expected, out)


@pytest.mark.slow
def test_a_date_whose_worker_always_dies_is_reported_failed(archive: Archive,
                                                             tmp_path: Path) -> None:
    # allowed_failures=0: the first death of a worker is final for the dates it was
    # processing or had queued (Dask counts the death against each).
    marker = tmp_path / "stalled.pid"
    out = tmp_path / "series"
    method = _StallOnce(date(2023, 4, 7), marker)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_series, archive, TILE, START, END, method, out,
                              _options(Execution(workers=2, allowed_failures=0)))
        os.kill(int(_wait_for(marker, 120)), signal.SIGKILL)
        reports = running.result(timeout=120)
    assert {r.label[:10]: r.status for r in reports}["2023-04-07"] == "failed"
    for report in reports:
        record = out / f"T31UFS_{report.label[:10].replace('-', '')}_gapfill.json"
        if report.status == "failed":
            assert "worker died on every try" in (report.reason or "")
            assert not record.exists()
        else:
            assert report.status == "done" and json.loads(record.read_text())["finished"]
    assert "done" in {r.status for r in reports}  # the other worker's dates
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def threads() -> Iterator[Any]:
    """An in-process LocalCluster (threads, started in about a second): task bookkeeping."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as local:
        yield local


@dataclass(frozen=True)
class _Failing:
    """A job's plan that logs each try, then raises ``error``."""

    log: Path
    error: Exception

    def __call__(self, engine: Any) -> DatePlan:
        with self.log.open("a") as file:
            file.write(f"{self.error}\n")
        raise self.error


def _grid() -> Any:
    from affine import Affine
    from rasterio.crs import CRS

    from decloud.grid import Grid

    return Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5700000), 8, 8)


@pytest.mark.parametrize(("error", "tries"), [
    (InferenceError("the model cannot run", field="model"), 1),  # would only fail again
    (RuntimeError("a bug, or a flaky file system"), 3),  # retries=2
])
def test_only_unexpected_errors_are_retried(threads: Any, tmp_path: Path,
                                            error: Exception, tries: int) -> None:
    from decloud.inference import EngineOptions

    log = tmp_path / "tries.log"
    job = SeriesJob("2023-04-07", tmp_path / "a.tif", _Failing(log, error))
    with pytest.raises(type(error), match=str(error).split(": ")[-1]):
        run_on_cluster([job], _grid(), EngineOptions(), SeriesOptions(strict=True), tmp_path,
                       Execution(scheduler=threads.scheduler_address, retries=2))
    assert log.read_text().splitlines() == [str(error)] * tries


def test_outputs_of_one_name_in_two_folders_are_two_tasks(threads: Any,
                                                          tmp_path: Path) -> None:
    from decloud.inference import EngineOptions

    log = tmp_path / "tries.log"
    jobs = [SeriesJob(f"2023-04-0{k}", tmp_path / folder / "T31UFS_gapfill.tif",
                      _Failing(log, InferenceError(f"no product in {folder}")))
            for k, folder in enumerate(("a", "b"), start=1)]
    reports = run_on_cluster(jobs, _grid(), EngineOptions(), SeriesOptions(), tmp_path,
                             Execution(scheduler=threads.scheduler_address))
    assert [(r.label, r.status, r.reason) for r in reports] == [
        ("2023-04-01", "failed", "no product in a"), ("2023-04-02", "failed", "no product in b")]
    assert sorted(log.read_text().splitlines()) == ["no product in a", "no product in b"]


@dataclass(frozen=True)
class _Plugin:
    method: Any
    name: str = "model"


def test_a_subclass_of_keras_method_is_not_shipped_as_the_native_engine() -> None:
    from decloud.inference.method import KerasMethod

    class Served(KerasMethod):  # as OtbtfMethod: the model served by another engine
        pass

    # The type alone decides (no model needed): OtbtfMethod's reference would load a
    # plain KerasMethod on workers.
    with pytest.raises(InferenceError, match="Served cannot run on Dask workers") as caught:
        portable(_Plugin(Served.__new__(Served)))
    assert caught.value.field == "engine"
    assert isinstance(caught.value, DecloudError)
    plain = _Plugin("not a model")
    assert portable(plain) is plain  # numpy plug-ins travel as they are
