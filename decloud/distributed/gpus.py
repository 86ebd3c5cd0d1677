"""One Dask worker per GPU: each worker process sees one device.

JAX (and TensorFlow) take every visible GPU when they initialise, so N workers on an
N-GPU node would all run on device 0. Each worker process must see its own device
through ``CUDA_VISIBLE_DEVICES``, set before the process starts, which only the nanny
can do: this module is a nanny preload (``--preload-nanny decloud.distributed.gpus``,
or ``LocalCluster(preload_nanny=[...])``) whose :func:`dask_setup` sets the variable in
the environment the nanny gives its worker process.

Worker ``i`` of a node gets the ``i``-th device the node's process was given: the
``i``-th entry of an inherited ``CUDA_VISIBLE_DEVICES`` (SLURM and PBS set it to the
devices of the job, e.g. ``2,3`` on a shared node), else device ``i``. The index is the
worker's name: a LocalCluster names its workers ``0, 1, ...`` and ``dask worker
--nworkers N --name job`` names them ``job-0, job-1, ...``.

:func:`gpu_cluster` starts a LocalCluster of one single-threaded worker per device;
:func:`gpu_worker_env` says which environment each worker gets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from decloud.errors import ArgumentError

if TYPE_CHECKING:
    from distributed import LocalCluster

__all__ = ["dask_setup", "device_for", "gpu_cluster", "gpu_worker_env", "worker_index"]

#: This module, as a nanny preload.
PRELOAD = __name__

_INDEX = re.compile(r"(?:^|-)(\d+)$")


def worker_index(name: object) -> int:
    """The node-local index of a worker from its name (``3``, ``"job-0-3"``).

    Raises:
        ArgumentError: The name does not end in a number.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    match = _INDEX.search(str(name))
    if match is None:
        raise ArgumentError(f"worker name {name!r} does not end in its index: name the "
                            "workers 0, 1, ... (LocalCluster) or start them with "
                            "`dask worker --nworkers N`", field="name")
    return int(match.group(1))


def device_for(index: int, visible: str | None = None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` of worker ``index``.

    Args:
        index: The worker's node-local index.
        visible: The devices the node's processes were given (an inherited
            ``CUDA_VISIBLE_DEVICES``); all the node's when None or empty.

    Raises:
        ArgumentError: Fewer devices were given than there are workers.
    """
    if not visible:
        return str(index)
    devices = [d.strip() for d in visible.split(",") if d.strip()]
    if index >= len(devices):
        raise ArgumentError(f"worker {index} has no GPU of its own: the job was given "
                            f"{len(devices)} ({visible}); start one worker per GPU",
                            field="CUDA_VISIBLE_DEVICES")
    return devices[index]


def gpu_worker_env(n: int, visible: str | None = None) -> list[dict[str, str]]:
    """The environment variables each of ``n`` workers gets (see the module doc).

    Raises:
        ArgumentError: ``n`` is not positive, or fewer devices are visible.
    """
    if n < 1:
        raise ArgumentError(f"a GPU cluster needs one worker at least, not {n}", field="n")
    return [{"CUDA_VISIBLE_DEVICES": device_for(i, visible)} for i in range(n)]


def dask_setup(nanny: Any) -> None:
    """Nanny preload hook: pin the nanny's worker process to its device.

    Runs in the nanny before it spawns its worker, so the variable is in place before
    the worker imports anything.
    """
    env: dict[str, str] = nanny.env
    env["CUDA_VISIBLE_DEVICES"] = device_for(worker_index(nanny.name),
                                             os.environ.get("CUDA_VISIBLE_DEVICES"))


def gpu_cluster(n: int | None = None, *, memory_limit: str | int = "auto",
                env: Mapping[str, str] | None = None, **kwargs: Any) -> LocalCluster:
    """A LocalCluster of one single-threaded worker process per GPU.

    Args:
        n: Workers (devices); all of this node's when None (``nvidia-smi -L``, or the
            inherited ``CUDA_VISIBLE_DEVICES``).
        memory_limit: Host memory per worker.
        env: More environment variables of every worker.
        **kwargs: More LocalCluster arguments.

    Raises:
        ArgumentError: No GPU found and ``n`` not given, or fewer GPUs than ``n``.
    """
    from distributed import LocalCluster

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = n if n is not None else _count_devices(visible)
    gpu_worker_env(count, visible)  # refuses more workers than devices before starting
    return LocalCluster(n_workers=count, threads_per_worker=1, processes=True,
                        memory_limit=memory_limit, preload_nanny=[PRELOAD],
                        env=dict(env or {}), **kwargs)


def _count_devices(visible: str | None) -> int:
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is not None:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
        count = sum(line.startswith("GPU ") for line in out.stdout.splitlines())
        if count:
            return count
    raise ArgumentError("no GPU found (nvidia-smi -L lists none): give the number of "
                        "workers", field="n")
