"""Options shared by several commands."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from decloud.archive import Archive

if TYPE_CHECKING:
    from decloud.distributed.cluster import Execution
    from decloud.inference.engine import EngineOptions, RunRecord
    from decloud.inference.method import KerasMethod

__all__ = [
    "archive_from_options",
    "archive_options",
    "check_model",
    "check_serving",
    "engine_from_options",
    "engine_options",
    "execution_from_options",
    "execution_options",
    "model_options",
    "run_summary",
    "serving_method",
    "serving_options",
]

F = TypeVar("F", bound=Callable[..., Any])

#: decloud.models.otbtf.EXECUTABLE, written out: importing decloud.models loads Keras
#: (a test checks they agree).
OTBTF_EXECUTABLE = "otbcli_TensorflowModelServe"

_DIR = click.Path(file_okay=False, path_type=Path)

#: decloud.inference.engine.DEFAULT_GDAL_CACHE_MB, written out: the engine module is
#: not imported to build the CLI (a test checks they agree).
GDAL_CACHE_MB = 256


def archive_options(func: F) -> F:
    """Add --archive / --s2-root / --s1-root / --dem-root to a command."""
    for option in reversed([
        click.option("--archive", "archive_root", type=_DIR,
                     help="Archive root holding S2/, S1/ and DEM/ (each optional)."),
        click.option("--s2-root", type=_DIR, help="S2 products: <TILE>/<product> or flat."),
        click.option("--s1-root", type=_DIR, help="S1Tiling outputs: <TILE>/*.tif or flat."),
        click.option("--dem-root", type=_DIR, help="DEMs: <TILE>.tif."),
    ]):
        func = option(func)
    return func


def archive_from_options(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None, dem_root: Path | None,
    *, check_files: bool = False,
) -> Archive:
    """Scan the archive the options name (``check_files``: see :meth:`Archive.scan`)."""
    if archive_root is None and not (s2_root or s1_root or dem_root):
        raise click.UsageError("give --archive ROOT, or at least one of --s2-root, --s1-root, "
                               "--dem-root")
    return Archive.from_roots(archive_root, s2_root, s1_root, dem_root,
                              check_files=check_files)


def _add(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def model_options(func: F) -> F:
    """Add --model / --allow-untrained / --seed (the model a processor runs)."""
    return _add(func, [
        click.option("--model", required=True, metavar="PATH|CONFIG",
                     help="A trained .keras file (with model_card.json next to it) or its "
                          "folder; with --allow-untrained, a configuration name or YAML file."),
        click.option("--allow-untrained", is_flag=True,
                     help="Accept a configuration: random (seeded) weights, for smoke tests "
                          "and benchmarks only."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the untrained weights."),
    ])


def check_model(model: str, allow_untrained: bool) -> None:
    """Refuse a model that is not a file unless untrained configurations are allowed."""
    if not allow_untrained and not Path(model).exists():
        raise click.BadParameter(
            f"{model} is not a model file: give a trained .keras file, or "
            "--allow-untrained to run a configuration with random weights", param_hint="--model")


def engine_options(func: F) -> F:
    """Add the streaming engine's and the composite's options to a model processor."""
    return _add(func, [
        click.option("--block-size", type=click.IntRange(min=16), default=None,
                     help="Core block side, pixels [default: 1280 on CPU, 2048 on GPU]."),
        click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Blocks per model call."),
        click.option("--readers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Threads reading inputs."),
        click.option("--dilation", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Pixels the cloud/shadow mask is grown by before compositing."),
        click.option("--feather", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Width (px) of the blend between the date's clear pixels and the "
                          "reconstruction."),
        click.option("--no-composite", is_flag=True,
                     help="Write the reconstruction everywhere, clear pixels included."),
        click.option("--overwrite", is_flag=True, help="Replace existing outputs."),
        click.option("--precision", type=click.Choice(["float32", "bfloat16"]),
                     default="float32", show_default=True,
                     help="Compute precision of the model: bfloat16 (about twice the "
                          "throughput on GPUs with bfloat16 units) is allowed for the models "
                          "validated with seeded weights only (msop_small, msop_unet), within "
                          "1e-2 reflectance of float32; trained weights are not validated."),
        click.option("--gdal-cache-mb", type=click.IntRange(min=1), default=GDAL_CACHE_MB,
                     show_default=True,
                     help="GDAL's raster block cache (MiB, process-wide), set before the "
                          "run starts and kept in the record; GDAL's own default (5 % of "
                          "the RAM) adds its size to the peak memory."),
    ])


def engine_from_options(block_size: int | None, batch_size: int, readers: int, dilation: int,
                        feather: int, no_composite: bool, overwrite: bool,
                        precision: str = "float32", *,
                        gdal_cache_mb: int = GDAL_CACHE_MB) -> EngineOptions:
    """The engine options that :func:`engine_options` asked for (progress bar on)."""
    from decloud.inference.composite import CompositeOptions
    from decloud.inference.engine import EngineOptions

    return EngineOptions(block_size=block_size, batch_size=batch_size, readers=readers,
                         target=None if no_composite else "t",
                         composite=CompositeOptions(dilation=dilation, feather=feather),
                         overwrite=overwrite, progress=True, precision=precision,
                         gdal_cache_mb=gdal_cache_mb)


def execution_options(func: F) -> F:
    """Add --workers, --threads-per-worker, --scheduler, --cluster-config, --retries, --gpus."""
    return _add(func, [
        click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Dask worker processes of a local cluster running the dates in "
                          "parallel (with --cluster-config: worker processes to ask "
                          "for); 0: one date after another in this process."),
        click.option("--threads-per-worker", type=click.IntRange(min=1), default=1,
                     show_default=True, help="Dates each local worker process runs at once "
                                             "(a local cluster of --workers only)."),
        click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
                     help="Run the dates on this running Dask scheduler's workers (they "
                          "must see the same paths)."),
        click.option("--cluster-config", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
                     default=None, help="Run the dates on a SLURM/PBS cluster described by "
                                        "this YAML file (pipelines/cluster-*.yaml)."),
        click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
                     help="Reruns of a date whose task raised an unexpected error (a "
                          "date whose worker died is rescheduled by Dask)."),
        click.option("--gpus", is_flag=True,
                     help="A local cluster of one worker per GPU of this node (--workers of "
                          "them; all the GPUs when 0), each seeing its own device."),
    ])


def execution_from_options(workers: int, threads_per_worker: int, scheduler: str | None,
                           cluster_config: Path | None, retries: int,
                           gpus: bool = False) -> Execution:
    """Where :func:`execution_options` asked the dates to run (workers load Keras quietly).

    Raises:
        click.UsageError: Options that do not go together (:class:`Execution`'s checks,
            the option named by the error's field).
    """
    from decloud.cli.backend import load_backend
    from decloud.distributed.cluster import Execution
    from decloud.errors import ArgumentError

    try:
        return Execution(workers=workers, threads_per_worker=threads_per_worker,
                         scheduler=scheduler, cluster_config=cluster_config,
                         retries=retries, backend=load_backend, gpus=gpus)
    except ArgumentError as err:
        option = f"--{err.field.replace('_', '-')}: " if err.field else ""
        raise click.UsageError(f"{option}{err.message}") from err


def run_summary(out: Path, record: RunRecord, extra: str = "") -> str:
    """One line on a finished run: blocks, time, and its clear/reconstructed/nodata share."""
    pixels = record.pixels
    total = max(1, sum(pixels.values()))
    return (f"{out}: {record.blocks['total']} blocks ({record.blocks['skipped']} skipped{extra}) "
            f"in {record.timing['wall_s']:.1f} s; clear {pixels['clear'] / total:.1%}, "
            f"reconstructed {(pixels['reconstructed'] + pixels['feathered']) / total:.1%}, "
            f"nodata {pixels['nodata'] / total:.1%}")


def serving_options(func: F) -> F:
    """Add --engine / --savedmodel (how a model processor runs its model)."""
    return _add(func, [
        click.option("--engine", "serving", type=click.Choice(["native", "otbtf"]),
                     default="native", show_default=True,
                     help="native: decloud's streaming engine runs the Keras model; otbtf: "
                          "OTBTF's otbcli_TensorflowModelServe runs its SavedModel export "
                          "(same outputs; needs OTBTF on PATH, e.g. the OTBTF docker image)."),
        click.option("--savedmodel", type=click.Path(exists=True, file_okay=False,
                                                     path_type=Path), default=None,
                     help="--engine otbtf: the model's SavedModel export (decloud export "
                          "--format savedmodel) [default: export it into a temporary folder]."),
    ])


def check_serving(serving: str, savedmodel: Path | None, precision: str = "float32") -> None:
    """Refuse --engine otbtf without OTBTF on PATH (before anything is loaded or written).

    ``--precision bfloat16`` is refused with it too: OTBTF runs the SavedModel as exported.
    """
    if serving == "otbtf" and precision != "float32":
        raise click.BadParameter("--precision has no effect there (--engine otbtf runs the "
                                 "SavedModel in the precision it was exported in)",
                                 param_hint="--precision")
    if serving != "otbtf":
        if savedmodel is not None:
            raise click.BadParameter("a SavedModel is served by --engine otbtf only",
                                     param_hint="--savedmodel")
        return
    # Checked here, not through decloud.inference.otbtf: that imports Keras, whose
    # start-up lines load_backend() filters, and a missing tool must cost nothing.
    if shutil.which(OTBTF_EXECUTABLE) is None:
        raise click.ClickException(
            f"{OTBTF_EXECUTABLE} is not on PATH: run in decloud's OTBTF image (docker/otbtf, "
            "built on mdl4eo/otbtf) or install OTBTF and source its otbenv.profile")


def serving_method(method: KerasMethod, serving: str, savedmodel: Path | None) -> KerasMethod:
    """The model as the engine runs it: itself, or served by OTBTF (``--engine otbtf``).

    An OTBTF method is closed when the command ends (its exported SavedModel and the
    last run's region rasters leave the temporary folder then, not at exit).
    """
    if serving != "otbtf":
        return method
    from decloud.inference.otbtf import OtbtfMethod

    served = OtbtfMethod.from_method(method, savedmodel=savedmodel)
    click.get_current_context().call_on_close(served.close)
    return served
