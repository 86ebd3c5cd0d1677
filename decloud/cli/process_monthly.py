"""``decloud process monthly``: one cloud-free image per month of a tile."""

from __future__ import annotations

from pathlib import Path

import click

from decloud.cli.backend import load_backend
from decloud.cli.options import (
    archive_from_options,
    archive_options,
    execution_from_options,
    execution_options,
)
from decloud.cli.process_series import job_option

__all__ = ["monthly"]


def _months(text: str) -> list[int]:
    """``1-12``, ``4``, ``3,4,5`` or ``3-5,9`` to month numbers."""
    months: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a month or a range such as 3-5",
                                     param_hint="--months") from None
        if not 1 <= low <= high <= 12:
            raise click.BadParameter(f"{part!r}: months are 1 to 12", param_hint="--months")
        months += [m for m in range(low, high + 1) if m not in months]
    if not months:
        raise click.BadParameter("no month given", param_hint="--months")
    return months


@click.command("monthly")
@job_option
@archive_options
@click.option("--tile", required=True, help="Tile id, e.g. T31UFS.")
@click.option("--year", required=True, type=click.IntRange(min=1970, max=2100),
              help="The year.")
@click.option("--months", type=str, default="1-12", show_default=True, metavar="1-12|3,4|...",
              help="The months to make.")
@click.option("--method", required=True, metavar="gapfill|MODEL",
              help="'gapfill' (interpolation at mid-month from the month's dates +- "
                   "--window-days) or a trained 6-date monthly .keras model (monthly6).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder receiving <TILE>_<YYYYMM>_<method>.tif, its quality layer, "
                   "record and quicklook per month, series.json and summary.json/.md.")
@click.option("--window-days", type=click.FloatRange(min=0), default=15.0, show_default=True,
              help="gapfill: dates this many days before and after the month are used too.")
@click.option("--buffer", type=click.IntRange(min=0), default=2, show_default=True,
              help="gapfill: dilation of clouds, cirrus and shadows, pixels.")
@click.option("--bands", default="B02,B03,B04,B08", show_default=True, metavar="B02,...",
              help="gapfill: 10 m bands to reconstruct.")
@click.option("--spacing-days", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True,
              help="model: t<k> is the S2 date nearest to the month's first day + k x this.")
@click.option("--max-s1-gap", type=click.FloatRange(min=0), default=72.0, show_default=True,
              help="model: hours between a date and its nearest S1 image at most.")
@click.option("--block-size", type=click.IntRange(min=16), default=None,
              help="Core block side, pixels [default: 1280 on CPU, 2048 on GPU].")
@click.option("--readers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading inputs.")
@click.option("--strict", is_flag=True, help="Stop at the first failed month.")
@click.option("--no-quicklooks", is_flag=True, help="Do not write the per-month PNGs.")
@execution_options
def monthly(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, tile: str, year: int, months: str, method: str, out_dir: Path,
    window_days: float, buffer: int, bands: str, spacing_days: float, max_s1_gap: float,
    block_size: int | None, readers: int, strict: bool, no_quicklooks: bool, workers: int,
    threads_per_worker: int, scheduler: str | None, cluster_config: Path | None, retries: int,
    gpus: bool,
) -> None:
    """Make one image per month of --year, by gap-filling or with a monthly6 model.

    Rerunning the same line resumes (months with a valid completion record are not
    touched); a month without data is recorded as failed and the others go on.
    """
    wanted = _months(months)
    execution = execution_from_options(workers, threads_per_worker, scheduler, cluster_config,
                                       retries, gpus)
    if method != "gapfill" and not Path(method).exists():
        raise click.BadParameter(f"{method} is neither 'gapfill' nor a model file",
                                 param_hint="--method")
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    load_backend()  # the engine imports Keras: load it with its start-up lines filtered
    from datetime import timedelta

    from decloud.inference.engine import EngineOptions
    from decloud.processors.monthly import MonthlyGapFill, MonthlyModel, monthly_synthesis
    from decloud.processors.single_date import load_method
    from decloud.processors.timeseries import SeriesOptions

    plugin: MonthlyGapFill | MonthlyModel
    if method == "gapfill":
        plugin = MonthlyGapFill(window_days=window_days, buffer=buffer,
                                bands=tuple(b.strip() for b in bands.split(",") if b.strip()))
    else:
        plugin = MonthlyModel(load_method(method), timedelta(days=spacing_days),
                              timedelta(hours=max_s1_gap))
        plugin.acquisitions()  # refuse a model that is not a monthly one before any month
    options = SeriesOptions(engine=EngineOptions(block_size=block_size, readers=readers),
                            strict=strict, quicklooks=not no_quicklooks, progress=True,
                            execution=execution)
    reports = monthly_synthesis(archive, tile, year, plugin, out_dir, options, months=wanted)
    failed = [r for r in reports if r.status == "failed"]
    click.echo(f"{len(reports)} months: {sum(r.status == 'done' for r in reports)} done, "
               f"{sum(r.status == 'complete' for r in reports)} already complete, "
               f"{len(failed)} failed; summary in {out_dir / 'summary.md'}")
    for report in failed:
        click.echo(f"  {report.label}: {report.reason}", err=True)
