"""The jobs of a series or a monthly synthesis as Dask tasks, one per output.

:func:`run_on_cluster` is what :func:`decloud.processors.timeseries.run_jobs` calls
when its options carry a distributed :class:`~decloud.distributed.cluster.Execution`.
Each job (a date or a month) is one task running the same code as the sequential loop
(``_one_job``: resume check, engine run, quicklook), so the outputs are the same bytes;
the client gathers the :class:`~decloud.processors.timeseries.DateReport` of each task
as it completes and rewrites ``summary.json``/``summary.md`` (in job order) after each.

Tasks are idempotent. The engine writes every output under a temporary name, renames
it, and writes the completion record last; a task starts by removing the temporaries a
killed attempt left for its own outputs (no other task writes them), then resumes as
the sequential run does: a record that vouches for the outputs makes the task report
``complete``, anything else is redone from scratch. A task whose worker died is
rescheduled by Dask (``allowed_failures``; a death counts against every task the worker
was processing or had queued); one that died on every try is reported failed with the
reason (its temporaries removed by the client), and the others go on. A task that
raises an unexpected error is rerun ``retries`` times; a
:class:`~decloud.errors.DecloudError` (a product or option problem, raised by the task
with ``strict`` only: otherwise it fails its date's report) is never rerun, as it would
fail again: the task returns it and the client raises it. Each task's key holds its job
index, so two outputs of the same name in different folders are two tasks. Each result
is released once gathered, so a worker lost later does not make Dask redo finished dates.

Ctrl-C cancels the tasks not yet finished, writes the summary of those that finished,
and re-raises.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from decloud.errors import DecloudError

if TYPE_CHECKING:
    from decloud.distributed.cluster import Execution
    from decloud.grid import Grid
    from decloud.inference.engine import EngineOptions
    from decloud.processors.timeseries import DateReport, SeriesJob, SeriesOptions

__all__ = ["Raised", "remove_temporaries", "run_on_cluster", "run_task"]

#: A temporary of :func:`decloud.writers.atomic_file` or the COG writer:
#: ``.<name>.<8 hex>.tmp<suffix>``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp(\.[A-Za-z]+)*$")


def remove_temporaries(out: Path) -> list[Path]:
    """Remove the temporaries left for the outputs of ``out`` by a killed run.

    The outputs of ``<stem>.tif`` are ``<stem>.*`` and ``<stem>_*`` (quality, days,
    extra layers, record, STAC item, quicklook); their temporaries are
    ``.<output name>.<8 hex>.tmp[.suffix]``. Only the task that makes ``out`` may call
    this.

    Returns:
        The files removed.
    """
    stem = out.stem if out.suffix == ".tif" else out.name
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for path in out.parent.iterdir():
        match = _TEMPORARY.match(path.name)
        if match is None:
            continue
        name = match["name"]
        if (name.startswith(f"{stem}.") or name.startswith(f"{stem}_")) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@dataclass(frozen=True)
class Raised:
    """A task's :class:`~decloud.errors.DecloudError`, returned so that Dask does not rerun it.

    Attributes:
        error: The error, raised again by the client.
    """

    error: DecloudError


def run_task(job: SeriesJob, grid: Grid, engine: EngineOptions,
             options: SeriesOptions) -> DateReport | Raised:
    """One job on a worker: the sequential runner's job, after a killed attempt's cleanup.

    Returns:
        The job's report, or the :class:`Raised` error of a ``strict`` run (Dask's
        ``retries`` rerun any raised error: this one would only fail again).
    """
    from decloud.inference.engine import record_path
    from decloud.processors.timeseries import _one_job

    remove_temporaries(job.out)
    try:
        return _one_job(job, grid, engine, options, record_path(job.out))
    except DecloudError as err:
        return Raised(err)


def run_on_cluster(jobs: Sequence[SeriesJob], grid: Grid, engine: EngineOptions,
                   options: SeriesOptions, out_dir: Path, execution: Execution, *,
                   title: str = "series") -> list[DateReport]:
    """Run ``jobs`` as Dask tasks; reports in job order, the summary kept up to date.

    Args:
        jobs: The outputs (their plug-in made portable: :func:`~.models.portable`).
        grid: The output grid.
        engine: The engine options.
        options: Strictness, quicklooks, progress (its ``execution`` is not sent).
        out_dir: The folder of ``summary.json``/``summary.md``.
        execution: Where to run (:func:`~.cluster.open_client`).
        title: The summary's title.

    Returns:
        One report per job, in job order.

    Raises:
        DecloudError: With ``strict``, the first failed job's error (the others are
            cancelled).
        KeyboardInterrupt: Ctrl-C (the unfinished tasks are cancelled).
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from decloud.distributed.cluster import open_client
    from decloud.processors.timeseries import DateReport, write_summary

    remote = dataclasses.replace(options, execution=None, progress=False)
    reports: dict[int, DateReport] = {}
    bar = tqdm(total=len(jobs), unit="date", desc=title,
               disable=None if options.progress else True)
    run = uuid.uuid4().hex[:8]  # task keys unique on a shared scheduler
    with open_client(execution) as client:
        # The job index in the key: Dask merges tasks of one key, and two outputs may
        # share a file name in different folders.
        futures = [client.submit(run_task, job, grid, engine, remote, pure=False,
                                 retries=execution.retries, key=f"{job.out.name}-{k}-{run}")
                   for k, job in enumerate(jobs)]
        index = {future.key: k for k, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                k = index[future.key]
                try:
                    result = future.result()
                except KilledWorker as err:
                    if options.strict:
                        raise
                    # Never run again: what its last try left half-written goes.
                    remove_temporaries(jobs[k].out)
                    result = DateReport(jobs[k].label, "failed",
                                        reason=f"its worker died on every try ({err})")
                if isinstance(result, Raised):
                    raise result.error
                reports[k] = result
                # Released: a worker lost later must not make the scheduler redo it.
                future.release()
                bar.update(1)
                bar.set_postfix_str(f"{jobs[k].label} {reports[k].status}")
                write_summary(out_dir, [reports[i] for i in sorted(reports)], title=title)
        except BaseException:
            # Ctrl-C, strict, or a bug in a task: stop the rest, keep the summary so far.
            client.cancel(futures)
            raise
        finally:
            bar.close()
    return [reports[k] for k in range(len(jobs))]
