"""SLURM and PBS clusters of Dask workers from a YAML file (dask-jobqueue).

A cluster configuration describes one batch job of Dask workers and how many to run::

    kind: slurm              # slurm | pbs | local
    cores: 32                # per job
    memory: 128GB            # per job
    processes: 4             # Dask worker processes per job (cores split between them)
    walltime: "04:00:00"
    queue: gpu               # SLURM partition (``partition:`` is accepted too) or PBS queue
    account: my-project
    gpus_per_job: 4          # one worker process per device (processes must equal it)
    job_extra_directives: ["--constraint=h100"]
    job_script_prologue: ["module load cuda/12", "source /work/venv/bin/activate"]
    local_directory: $TMPDIR # worker spill space: a node-local disk, not the shared one
    workers: 8               # worker processes to start (or ``adapt: {minimum, maximum}``)

:func:`load_cluster_config` reads and checks it (:class:`ClusterConfigError` naming the
file and the field: an unknown key, a wrong type, a missing field, an unknown kind);
:meth:`ClusterConfig.make_cluster` builds the ``dask_jobqueue.SLURMCluster`` or
``PBSCluster`` (``kind: local``: a :class:`distributed.LocalCluster` of the same shape,
to try a configuration on one machine) and :meth:`ClusterConfig.job_script` gives the
script dask-jobqueue submits, to check a configuration without a batch system.

dask-jobqueue is imported only when a cluster or a script is made: install it with
``pip install 'decloud[cluster]'``.

GPUs: with ``gpus_per_job: N`` a SLURM job asks ``--gres=gpu:N`` (a PBS job
``ngpus=N`` in its ``select``) unless a directive already asks for GPUs, and its N
worker processes each see one device: the nannies preload
:mod:`decloud.distributed.gpus`, which sets ``CUDA_VISIBLE_DEVICES`` of worker ``i`` to
the ``i``-th device the job was given before the worker starts (and JAX initialises).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from decloud.errors import ClusterConfigError, LocatedValueError

if TYPE_CHECKING:
    from distributed.deploy import Cluster

__all__ = ["AdaptConfig", "ClusterConfig", "ClusterConfigError", "load_cluster_config"]

#: The module the nannies preload to pin one device per worker process.
GPU_PRELOAD = "decloud.distributed.gpus"

#: ``[days-]hours:minutes:seconds``, which SLURM and PBS both read.
_WALLTIME = re.compile(r"^(\d+-)?\d+:[0-5]\d:[0-5]\d$")

#: Placeholder scheduler address of :meth:`ClusterConfig.job_script`.
_SCHEDULER = "tcp://scheduler:8786"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AdaptConfig(_Strict):
    """Adaptive scaling: Dask starts and stops jobs to keep between these many workers."""

    minimum: int = Field(default=0, ge=0)
    maximum: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> AdaptConfig:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) is above maximum ({self.maximum})")
        return self


class ClusterConfig(_Strict):
    """One batch job of Dask workers, and how many workers to run (see the module doc).

    Attributes:
        kind: ``slurm``, ``pbs`` or ``local`` (a LocalCluster of the same shape).
        cores: Cores per job.
        memory: Memory per job (``128GB``, ``64GiB``...).
        processes: Dask worker processes per job; the cores and memory are split
            between them.
        walltime: ``[days-]HH:MM:SS``.
        queue: SLURM partition or PBS queue (key ``queue`` or ``partition``).
        account: Account (project) the jobs are charged to.
        job_name: Name of the jobs in the queue.
        resource_spec: PBS only: the ``-l`` resource line (``select=1:ncpus=...``);
            built from cores, memory and GPUs when None.
        job_extra_directives: More ``#SBATCH``/``#PBS`` lines (without the prefix).
        job_script_prologue: Shell lines run before the worker starts (modules, venv).
        local_directory: Worker spill folder (a node-local disk: ``$TMPDIR``).
        log_directory: Folder of the jobs' output files.
        python: Python interpreter of the workers (the submitting one when None).
        interface: Network interface the workers listen on (``ib0``).
        worker_extra_args: More arguments of the ``dask worker`` command.
        gpus_per_job: GPUs per job; each worker process gets one.
        workers: Worker processes to start; None with ``adapt``, or the caller's.
        adapt: Adaptive scaling bounds (worker processes), instead of ``workers``.
        source: The file the configuration was read from (for messages).
    """

    kind: Literal["slurm", "pbs", "local"]
    cores: int = Field(ge=1)
    memory: str
    processes: int = Field(default=1, ge=1)
    walltime: str | None = None
    queue: str | None = Field(default=None, validation_alias=AliasChoices("queue", "partition"))
    account: str | None = None
    job_name: str = "decloud"
    resource_spec: str | None = None
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = None
    interface: str | None = None
    worker_extra_args: list[str] = Field(default_factory=list)
    gpus_per_job: int = Field(default=0, ge=0)
    workers: int | None = Field(default=None, ge=0)
    adapt: AdaptConfig | None = None
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        from dask.utils import parse_bytes

        try:
            parse_bytes(self.memory)
        except ValueError as err:
            raise _field_error("memory", f"not an amount of memory: {self.memory!r} "
                              "(write e.g. 64GB or 100GiB)") from err
        if self.walltime is not None and not _WALLTIME.match(self.walltime):
            raise _field_error("walltime", f"{self.walltime!r} is not [days-]HH:MM:SS")
        if self.processes > self.cores:
            raise _field_error("processes", f"{self.processes} worker processes for "
                              f"{self.cores} cores: each needs one core at least")
        if self.gpus_per_job and self.processes != self.gpus_per_job:
            raise _field_error("processes", f"{self.processes} worker processes for "
                              f"{self.gpus_per_job} GPUs: set processes to gpus_per_job "
                              "(one worker per device)")
        if self.workers is not None and self.adapt is not None:
            raise _field_error("adapt", "give workers or adapt, not both")
        if self.resource_spec is not None and self.kind != "pbs":
            raise _field_error("resource_spec", f"a PBS setting, not one of {self.kind}")
        return self

    # Clusters -----------------------------------------------------------------------

    def job_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the dask-jobqueue cluster (and job) class."""
        if self.kind == "local":
            raise ClusterConfigError("a local cluster submits no jobs", path=self.source,
                                     field="kind")
        extra_args = list(self.worker_extra_args)
        if self.gpus_per_job:  # the same rule as a local cluster: >= 1 device
            extra_args += ["--preload-nanny", GPU_PRELOAD]
        directives = list(self.job_extra_directives)
        kwargs: dict[str, Any] = {
            "cores": self.cores, "memory": self.memory, "processes": self.processes,
            "walltime": self.walltime, "queue": self.queue, "account": self.account,
            "job_name": self.job_name, "job_extra_directives": directives,
            "job_script_prologue": list(self.job_script_prologue),
            "local_directory": self.local_directory, "log_directory": self.log_directory,
            "python": self.python, "interface": self.interface,
            "worker_extra_args": extra_args}
        if self.kind == "slurm":
            if self.gpus_per_job and not any(d.lstrip().startswith(("--gres", "--gpus", "-G"))
                                              for d in directives):
                directives.append(f"--gres=gpu:{self.gpus_per_job}")
        else:
            kwargs["resource_spec"] = self.resource_spec or self._pbs_select()
        return {k: v for k, v in kwargs.items() if v is not None}

    def _pbs_select(self) -> str | None:
        if not self.gpus_per_job:
            return None  # dask-jobqueue's own select line from cores and memory
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        return (f"select=1:ncpus={self.cores}:mem={pbs_format_bytes_ceil(parse_bytes(self.memory))}"
                f":ngpus={self.gpus_per_job}")

    def job_script(self, scheduler: str = _SCHEDULER) -> str:
        """The batch script dask-jobqueue submits for one job (no batch system needed).

        Args:
            scheduler: Scheduler address written in the worker command (a running
                cluster writes its own).

        Raises:
            ClusterConfigError: ``kind: local`` (no job), or dask-jobqueue is missing.
        """
        jobqueue = _jobqueue(self.source)
        kwargs = self.job_kwargs()
        job_cls = jobqueue.SLURMCluster.job_cls if self.kind == "slurm" \
            else jobqueue.PBSCluster.job_cls
        return str(job_cls(scheduler=scheduler, name=f"{self.job_name}-0", **kwargs).job_script())

    def make_cluster(self, workers: int | None = None, **options: Any) -> Cluster:
        """Start the cluster's scheduler here and ask for its workers.

        Args:
            workers: Worker processes to start (jobs are submitted for them), overriding
                the file's ``workers``; with neither, the file's ``adapt`` bounds, else
                no worker until the caller scales the cluster.
            **options: More arguments of the cluster class (``scheduler_options``...).

        Raises:
            ClusterConfigError: dask-jobqueue is missing (install ``decloud[cluster]``).
        """
        count = workers if workers is not None else self.workers
        if self.kind == "local":
            cluster = self._local_cluster(count, options)
        else:
            jobqueue = _jobqueue(self.source)
            cls = jobqueue.SLURMCluster if self.kind == "slurm" else jobqueue.PBSCluster
            cluster = cls(**self.job_kwargs(), **options)
            if count is not None:
                cluster.scale(count)
        if count is None and self.adapt is not None:
            cluster.adapt(minimum=self.adapt.minimum, maximum=self.adapt.maximum)
        return cluster

    def _local_cluster(self, count: int | None, extra: dict[str, Any]) -> Cluster:
        from dask.utils import parse_bytes
        from distributed import LocalCluster

        n = self.processes if count is None else count
        options: dict[str, Any] = dict(extra)
        options.setdefault("dashboard_address", ":0")  # a free port: 8787 may be taken
        if self.gpus_per_job:
            options["preload_nanny"] = [GPU_PRELOAD]
        if self.local_directory is not None:
            # Dask takes the folder as is; a batch script leaves ``$TMPDIR`` to the shell.
            options["local_directory"] = str(
                Path(os.path.expandvars(self.local_directory)).expanduser())
        return LocalCluster(n_workers=n, processes=True,
                            threads_per_worker=max(1, self.cores // self.processes),
                            memory_limit=parse_bytes(self.memory) // self.processes,
                            **options)


def _field_error(field: str, message: str) -> LocatedValueError:
    """A consistency problem of one field: pydantic wraps it, its ``loc`` names the field."""
    return LocatedValueError(message, (field,))


def _jobqueue(source: str | None) -> Any:
    try:
        import dask_jobqueue
    except ImportError as err:
        raise ClusterConfigError(
            "SLURM and PBS clusters need dask-jobqueue, which is not installed: "
            "pip install 'decloud[cluster]'", path=source, field="kind") from err
    return dask_jobqueue


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """Read and check a cluster configuration file (YAML; see the module doc).

    Raises:
        ClusterConfigError: The file cannot be read, is not YAML or not a mapping, or a
            field is unknown, missing, of the wrong type or inconsistent (the error
            names the file and the field).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ClusterConfigError(f"cannot read ({err.strerror})", path=path) from err
    except yaml.YAMLError as err:
        raise ClusterConfigError(f"invalid YAML ({err})", path=path) from err
    if not isinstance(raw, dict):
        raise ClusterConfigError(f"a cluster configuration is a mapping (kind: slurm, "
                                 f"cores: ...), not {type(raw).__name__}", path=path)
    try:
        return ClusterConfig.model_validate({**raw, "source": str(path)})
    except ValidationError as err:
        first = err.errors()[0]
        cause = first.get("ctx", {}).get("error")
        where = ".".join(str(p) for p in first["loc"])
        if isinstance(cause, LocatedValueError):
            raise ClusterConfigError(str(cause), path=path,
                                     field=".".join(str(p) for p in cause.loc)) from err
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            known = ", ".join(sorted(set(ClusterConfig.model_fields) - {"source"}))
            message = f"unknown key (known: {known})"
        elif first["type"] == "missing":
            message = "missing: this field is required"
        elif first["type"] == "literal_error":
            message = f"unknown kind {first['input']!r}: slurm, pbs or local"
        raise ClusterConfigError(message, path=path, field=where or None) from err
