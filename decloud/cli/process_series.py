"""``decloud process series``: every S2 date of a tile in a date range, resumable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from decloud.cli.backend import load_backend
from decloud.cli.options import (
    archive_from_options,
    archive_options,
    check_serving,
    execution_from_options,
    execution_options,
    serving_method,
    serving_options,
)

__all__ = ["job_option", "series"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _option_value(value: Any) -> Any:
    """A YAML value as the command line would give it (dates as text, lists joined)."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value


def _load_job(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    """Make a job file's entries the command's defaults (the command line still wins)."""
    if path is None:
        return
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise click.BadParameter(f"{path}: unreadable job file ({err})",
                                 param_hint="--job") from err
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: a job file is a mapping of options to values",
                                 param_hint="--job")
    # Keys are the long options without dashes (out, window-days or window_days).
    names: dict[str, str] = {}
    for param in ctx.command.params:
        if isinstance(param, click.Option) and param.name and param.name != "job":
            for opt in param.opts:
                if opt.startswith("--"):
                    names[opt[2:]] = names[opt[2:].replace("-", "_")] = param.name
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        if str(key) not in names:
            raise click.BadParameter(f"{path}: unknown option {key!r} (options: "
                                     f"{', '.join(sorted(k for k in names if '_' not in k))})",
                                     param_hint="--job")
        defaults[names[str(key)]] = _option_value(value)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def job_option(command: _F) -> _F:
    """``--job FILE``: a YAML job file whose entries are the command's option defaults."""
    return click.option(
        "--job", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        is_eager=True, expose_value=False, callback=_load_job,
        help="YAML job file (pipelines/*.yaml): option: value entries used as defaults; "
             "options given on the command line win.")(command)


@click.command("series")
@job_option
@archive_options
@click.option("--tile", required=True, help="Tile id, e.g. T31UFS.")
@click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="First date (YYYY-MM-DD, included).")
@click.option("--end", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Last date (YYYY-MM-DD, included).")
@click.option("--method", required=True, metavar="gapfill|linear|wlr|patchgroup|MODEL",
              help="'gapfill' (per-pixel interpolation from the tile's other dates), "
                   "'linear', 'wlr' or 'patchgroup' (each date rebuilt from the tile's "
                   "dates within --window-days: linear interpolation, weighted linear "
                   "regression, progressive spatio-temporal patch groups) or a "
                   "trained .keras model (or its folder): single-date (ssop_unet, dsen2cr) "
                   "or multi-temporal (msop_*, os1_unet: needs --catalog).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder receiving <TILE>_<YYYYMMDD>_<method>.tif, its quality layer, "
                   "record and quicklook per date, series.json and summary.json/.md.")
@click.option("--window-days", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="gapfill, linear, wlr, patchgroup: "
                   "dates within this many days are used.")
@click.option("--buffer", type=click.IntRange(min=0), default=2, show_default=True,
              help="gapfill, linear, wlr, patchgroup: "
                   "dilation of clouds, cirrus and shadows, pixels.")
@click.option("--bands", default="B02,B03,B04,B08", show_default=True, metavar="B02,...",
              help="gapfill, linear, wlr, patchgroup: "
                   "10 m bands to reconstruct.")
@click.option("--catalog", "catalog_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="multi-temporal model: the catalog (decloud index build) whose per-patch "
                   "statistics choose t-1 and t+1 per block.")
@click.option("--layout", default="os2-occitanie", show_default=True, metavar="NAME|PATH",
              help="multi-temporal model: the layout whose windows choose t-1 and t+1.")
@click.option("--dem", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="multi-temporal model: the tile's DEM, if the model reads it.")
@click.option("--max-s1-gap", type=click.FloatRange(min=0), default=72.0, show_default=True,
              help="model: hours between a date and its nearest S1 image at most.")
@click.option("--no-composite", is_flag=True,
              help="Write the reconstruction everywhere, the date's clear pixels included.")
@click.option("--block-size", type=click.IntRange(min=16), default=None,
              help="Core block side, pixels [default: 1280 on CPU, 2048 on GPU].")
@click.option("--readers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading inputs.")
@click.option("--strict", is_flag=True,
              help="Stop at the first failed date (default: record it and go on).")
@click.option("--no-quicklooks", is_flag=True, help="Do not write the per-date PNGs.")
@execution_options
@serving_options
def series(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, tile: str, start: datetime, end: datetime, method: str,
    out_dir: Path, window_days: float, buffer: int, bands: str, catalog_dir: Path | None,
    layout: str, dem: Path | None, max_s1_gap: float,
    no_composite: bool, block_size: int | None, readers: int, strict: bool,
    no_quicklooks: bool, workers: int, threads_per_worker: int, scheduler: str | None,
    cluster_config: Path | None, retries: int, gpus: bool, serving: str, savedmodel: Path | None,
) -> None:
    """Reconstruct every S2 date of a tile from --start to --end.

    Rerunning the same line resumes: a date is skipped only when its completion record
    is valid and matches the method and inputs; a rerun with other settings into the
    same folder is refused. A date that fails is recorded with its reason in
    summary.json/summary.md and the series goes on (unless --strict).
    """
    if end < start:
        raise click.BadParameter(f"{end:%Y-%m-%d} is before --start {start:%Y-%m-%d}",
                                 param_hint="--end")
    numpy_methods = ("gapfill", "linear", "wlr", "patchgroup")
    if method not in numpy_methods and not Path(method).exists():
        raise click.BadParameter(f"{method} is neither one of {', '.join(numpy_methods)} "
                                 "nor a model file", param_hint="--method")
    if method in numpy_methods and serving == "otbtf":
        raise click.UsageError(f"--engine otbtf serves a model's SavedModel: {method} has "
                               "no model (use --engine native)")
    check_serving(serving, savedmodel)
    execution = execution_from_options(workers, threads_per_worker, scheduler, cluster_config,
                                       retries, gpus)
    if serving == "otbtf" and execution.distributed:
        # Dask workers reload the Keras model by reference: they would run it natively.
        raise click.UsageError("--engine otbtf runs the dates in this process (OTBTF uses "
                               "the node's cores itself): drop --workers, --scheduler and "
                               "--cluster-config")
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    load_backend()  # the engine imports Keras: load it with its start-up lines filtered
    from decloud.inference.engine import EngineOptions
    from decloud.keys import KeyKind, parse_key
    from decloud.processors.single_date import load_method
    from decloud.processors.timeseries import (
        DateMethod,
        GapFillDates,
        ModelDates,
        MultiTemporalDates,
        SeriesOptions,
        run_series,
    )

    plugin: DateMethod
    if method == "gapfill":
        plugin = GapFillDates(window_days=window_days, buffer=buffer,
                              bands=tuple(b.strip() for b in bands.split(",") if b.strip()),
                              keep_clear=not no_composite)
    elif method in numpy_methods:
        from decloud.processors.reconstruction.series import SeriesDates

        plugin = SeriesDates(method, window_days=window_days, buffer=buffer,
                             bands=tuple(b.strip() for b in bands.split(",") if b.strip()),
                             keep_clear=not no_composite)
    else:
        model = serving_method(load_method(method), serving, savedmodel)
        acquisitions = {parse_key(k.name)[1] for k in model.input_keys
                        if parse_key(k.name)[0] is not KeyKind.DEM}
        if acquisitions <= {"t"}:
            plugin = ModelDates(model, timedelta(hours=max_s1_gap), keep_clear=not no_composite)
        elif catalog_dir is None:
            raise click.UsageError(f"{method} is a multi-temporal model (it reads "
                                   f"{', '.join(sorted(a or '' for a in acquisitions))}): "
                                   "give --catalog to choose t-1 and t+1")
        else:
            plugin = MultiTemporalDates(model, catalog_dir, layout, dem,
                                        keep_clear=not no_composite)
    options = SeriesOptions(engine=EngineOptions(block_size=block_size, readers=readers),
                            strict=strict, quicklooks=not no_quicklooks, progress=True,
                            execution=execution)
    reports = run_series(archive, tile, start.date(), end.date(), plugin, out_dir, options)
    failed = [r for r in reports if r.status == "failed"]
    click.echo(f"{len(reports)} dates: {sum(r.status == 'done' for r in reports)} done, "
               f"{sum(r.status == 'complete' for r in reports)} already complete, "
               f"{len(failed)} failed; summary in {out_dir / 'summary.md'}")
    for report in failed:
        click.echo(f"  {report.label}: {report.reason}", err=True)
