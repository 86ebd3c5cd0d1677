"""Where a series runs: in this process, on a LocalCluster, a scheduler or a batch cluster.

:class:`Execution` holds the choice (the CLI's ``--workers``, ``--threads-per-worker``,
``--scheduler``, ``--cluster-config``); :func:`open_client` gives a Dask client for it
and closes what it started. Three ways:

* a ``LocalCluster`` of ``workers`` processes (not threads: each worker process has its
  own Keras/TensorFlow and GDAL state), ``threads_per_worker`` tasks each;
* an existing scheduler (``tcp://host:8786``): its workers must see the same paths;
* a dask-jobqueue cluster (SLURM, PBS) described by a YAML file
  (:func:`decloud.distributed.jobqueue.load_cluster_config`), ``workers`` worker
  processes asked (the jobs submitted for them follow the file's ``processes`` per job);
* ``gpus``: a LocalCluster of one single-threaded worker per GPU of this node, each
  seeing its own device (:func:`decloud.distributed.gpus.gpu_cluster`; ``workers``
  of them, all the node's devices when 0).

``workers=0`` with neither a scheduler nor a cluster file is the sequential run in this
process (:attr:`Execution.distributed` is False). ``threads_per_worker`` shapes the plain
LocalCluster only: GPU workers are single-threaded, and a scheduler's or a cluster
file's workers have their own threads, so another value is refused there.

Retries: a task whose worker dies (killed, out of memory, node lost) is rescheduled by
Dask up to ``allowed_failures`` times (the scheduler's
``distributed.scheduler.allowed-failures``, set for the clusters started here; an
external scheduler keeps its own setting); a task that raises an unexpected error
is retried ``retries`` times, never one whose error is a
:class:`~decloud.errors.DecloudError` (it fails its date only, or the run when strict:
:mod:`decloud.distributed.runner`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decloud.errors import ArgumentError, SchedulerError

__all__ = ["Execution", "open_client"]


@dataclass(frozen=True)
class Execution:
    """How the dates of a series are run.

    Attributes:
        workers: Worker processes of a LocalCluster, or of the ``cluster_config``
            cluster (overriding the file's ``workers``); 0 with neither ``scheduler``
            nor ``cluster_config``: sequentially in this process.
        threads_per_worker: Tasks (dates) each LocalCluster worker runs at once (1 with
            ``gpus``, ``scheduler`` or ``cluster_config``: their workers' threads are
            set elsewhere).
        scheduler: Address of a running Dask scheduler (``tcp://host:8786``).
        cluster_config: A dask-jobqueue YAML file (SLURM, PBS).
        retries: Reruns of a task that raised an unexpected error.
        allowed_failures: Worker deaths a task survives (clusters started here).
        backend: Called once per worker process before Keras is imported (the CLI
            passes its quiet backend loader).
        timeout: Seconds to reach a scheduler.
        gpus: One worker per GPU of this node (a local cluster).
    """

    workers: int = 0
    threads_per_worker: int = 1
    scheduler: str | None = None
    cluster_config: Path | None = None
    retries: int = 2
    allowed_failures: int = 3
    backend: Callable[[], object] | None = None
    timeout: float = 30.0
    gpus: bool = False

    def __post_init__(self) -> None:
        for name in ("workers", "retries", "allowed_failures"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"{name} {getattr(self, name)} must be >= 0", field=name)
        if self.threads_per_worker < 1:
            raise ArgumentError(f"threads_per_worker {self.threads_per_worker} must be >= 1",
                                field="threads_per_worker")
        if self.scheduler is not None and self.cluster_config is not None:
            raise ArgumentError("give a scheduler or a cluster configuration, not both",
                                field="scheduler")
        if self.gpus and (self.scheduler is not None or self.cluster_config is not None):
            raise ArgumentError("gpus starts a local cluster: a scheduler or a cluster "
                                "configuration (gpus_per_job) has its own workers",
                                field="gpus")
        if self.scheduler is not None and self.workers:
            raise ArgumentError("workers apply to a local cluster or a cluster "
                                "configuration: a running scheduler has its own",
                                field="workers")
        if self.threads_per_worker != 1 and (self.gpus or self.scheduler is not None
                                             or self.cluster_config is not None):
            # Ignored there otherwise: say so rather than run with other threads.
            raise ArgumentError(f"threads_per_worker {self.threads_per_worker} applies to a "
                                "local cluster only: GPU workers have one thread, a "
                                "scheduler's or a cluster file's workers their own (cores/"
                                "processes)", field="threads_per_worker")

    @property
    def distributed(self) -> bool:
        """Whether the dates run on Dask (else sequentially in this process)."""
        return bool(self.workers or self.scheduler or self.cluster_config or self.gpus)


@contextlib.contextmanager
def open_client(execution: Execution) -> Iterator[Any]:
    """A Dask client for ``execution``; the cluster it started is closed on exit.

    Raises:
        ArgumentError: ``execution`` is the sequential run.
        SchedulerError: The scheduler cannot be reached.
        ArgumentError: ``gpus`` on a node without GPUs (or fewer than ``workers``).
        ClusterConfigError: The cluster file is invalid, or dask-jobqueue is missing.
    """
    import dask
    from distributed import Client, LocalCluster

    if not execution.distributed:
        raise ArgumentError("a sequential run has no Dask client", field="workers")
    config = {"distributed.scheduler.allowed-failures": execution.allowed_failures}
    with contextlib.ExitStack() as stack:
        if execution.scheduler is not None:
            try:
                client = Client(execution.scheduler, timeout=execution.timeout)
            except (OSError, ValueError) as err:  # TimeoutError is an OSError
                raise SchedulerError(
                    f"cannot reach the Dask scheduler at {execution.scheduler} within "
                    f"{execution.timeout:g} s ({type(err).__name__}: {err})",
                    field="scheduler") from err
        else:
            stack.enter_context(dask.config.set(config))
            cluster: Any
            if execution.gpus:
                from decloud.distributed.gpus import gpu_cluster

                cluster = gpu_cluster(execution.workers or None, dashboard_address=":0",
                                      silence_logs=logging.ERROR)
            elif execution.cluster_config is not None:
                from decloud.distributed.jobqueue import load_cluster_config

                cluster = load_cluster_config(execution.cluster_config).make_cluster(
                    execution.workers or None)
            else:
                # Dask's start-up and shut-down warnings are noise on a terminal; the
                # HTTP server on a free port (8787 may be taken by another cluster).
                cluster = LocalCluster(n_workers=execution.workers,
                                       threads_per_worker=execution.threads_per_worker,
                                       processes=True, dashboard_address=":0",
                                       silence_logs=logging.ERROR)
            stack.enter_context(cluster)
            client = Client(cluster)
        stack.enter_context(client)
        yield client
