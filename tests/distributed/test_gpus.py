"""One worker per GPU: the device each worker process sees (no GPU needed)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from decloud.distributed.gpus import (
    dask_setup,
    device_for,
    gpu_cluster,
    gpu_worker_env,
    worker_index,
)
from decloud.errors import ArgumentError


@pytest.mark.parametrize(("name", "index"), [(0, 0), (3, 3), ("2", 2), ("job-7-1", 1),
                                             ("SLURMCluster-12-3", 3)])
def test_worker_index_from_its_name(name: object, index: int) -> None:
    assert worker_index(name) == index


def test_a_name_without_index_is_refused() -> None:
    with pytest.raises(ArgumentError, match="does not end in its index"):
        worker_index("tcp-worker")


def test_each_worker_gets_its_own_device() -> None:
    assert gpu_worker_env(3) == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(3)]
    # A job given devices 2 and 5 of a shared node: workers map onto them in order.
    assert gpu_worker_env(2, "2,5") == [{"CUDA_VISIBLE_DEVICES": "2"},
                                        {"CUDA_VISIBLE_DEVICES": "5"}]
    assert device_for(0, "GPU-aa11, GPU-bb22") == "GPU-aa11"


def test_more_workers_than_devices_is_refused() -> None:
    with pytest.raises(ArgumentError, match="worker 2 has no GPU"):
        gpu_worker_env(3, "0,1")
    with pytest.raises(ArgumentError, match="one worker at least"):
        gpu_worker_env(0)


def test_the_preload_sets_the_nanny_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    nanny = SimpleNamespace(name="job-0-1", env={"OTHER": "x"})
    dask_setup(nanny)
    assert nanny.env == {"OTHER": "x", "CUDA_VISIBLE_DEVICES": "6"}


@pytest.mark.slow
def test_a_gpu_cluster_pins_each_worker_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real worker processes: each reads the variable its nanny set before it started.
    from distributed import Client

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    with gpu_cluster(2, memory_limit="1GB", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        seen = client.run(lambda: (os.environ["CUDA_VISIBLE_DEVICES"], os.getpid()))
        info = client.scheduler_info()["workers"]
    by_name = {info[address]["name"]: value for address, value in seen.items()}
    assert {name: device for name, (device, _) in by_name.items()} == {0: "3", 1: "1"}
    assert len({pid for _, pid in seen.values()}) == 2  # two processes
    assert all(w["nthreads"] == 1 for w in info.values())
