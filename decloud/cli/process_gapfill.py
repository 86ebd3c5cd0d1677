"""``decloud process gapfill``: per-pixel gap-filling of a tile at dates or on a time grid."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from decloud.cli.backend import load_backend
from decloud.cli.options import archive_from_options, archive_options
from decloud.constants import S2_10M_BANDS

if TYPE_CHECKING:
    from decloud.processors.gapfill import TargetResult

__all__ = ["gapfill", "parse_step"]

_STEP = re.compile(r"(?P<count>\d+)\s*(?P<unit>d|days?|w|weeks?)?", re.IGNORECASE)


def parse_step(text: str) -> timedelta:
    """A time step such as ``10d``, ``10``, ``2w`` (days unless weeks are named).

    Raises:
        click.BadParameter: Not a positive whole number of days or weeks.
    """
    match = _STEP.fullmatch(text.strip())
    if match is None or int(match["count"]) < 1:
        raise click.BadParameter(f"{text!r} is not a step such as 10d or 2w", param_hint="--every")
    unit = (match["unit"] or "d").lower()
    count = int(match["count"])
    return timedelta(weeks=count) if unit.startswith("w") else timedelta(days=count)


def _targets(days: tuple[datetime, ...], every: str | None, start: datetime | None,
             end: datetime | None) -> list[date]:
    from decloud.processors.gapfill import time_grid

    if days and (every or start or end):
        raise click.UsageError("give --date, or --every with --start and --end, not both")
    if days:
        return [d.date() for d in days]
    if not (every and start and end):
        raise click.UsageError("give --date (repeatable), or --every with --start and --end")
    if end < start:
        raise click.BadParameter(f"{end:%Y-%m-%d} is before --start {start:%Y-%m-%d}",
                                 param_hint="--end")
    return [d.date() for d in time_grid(start, end, parse_step(every))]


@click.command()
@archive_options
@click.option("--tile", required=True, help="Tile id, e.g. T31TEJ.")
@click.option("--date", "days", multiple=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Target date (YYYY-MM-DD); repeatable.")
@click.option("--every", default=None, metavar="STEP",
              help="Regular targets every STEP (10d, 2w) from --start to --end.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First target of --every.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Last possible target of --every (included).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder receiving <TILE>_<YYYYMMDD>_gapfill.tif, _quality.tif, _days.tif "
                   "and .json.")
@click.option("--window-days", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True,
              help="S2 dates within this many days of a target are used.")
@click.option("--buffer", type=click.IntRange(min=0), default=2, show_default=True,
              help="Dilation of clouds, cirrus and shadows, in pixels.")
@click.option("--bands", default=",".join(S2_10M_BANDS), show_default=True,
              metavar="B02,B03,...", help="10 m bands to reconstruct.")
@click.option("--no-keep-clear", is_flag=True,
              help="Write the interpolation everywhere, even over the clear pixels of a "
                   "target day's own product.")
@click.option("--block-size", type=click.IntRange(min=16), default=1024, show_default=True,
              help="Core block side streamed, pixels.")
@click.option("--readers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads reading inputs.")
@click.option("--overwrite", is_flag=True,
              help="Redo targets that have a completion record.")
def gapfill(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, tile: str, days: tuple[datetime, ...], every: str | None,
    start: datetime | None, end: datetime | None, out_dir: Path, window_days: float,
    buffer: int, bands: str, no_keep_clear: bool, block_size: int, readers: int,
    overwrite: bool,
) -> None:
    """Gap-fill a tile at dates: per-pixel interpolation between clear observations.

    Every pixel takes the nearest clear S2 observations before and after the target
    (clouds, cirrus and shadows dilated by --buffer) and interpolates linearly in time;
    one side only gives that observation. Targets with a completion record are skipped,
    so rerunning the same line resumes.
    """
    targets = _targets(days, every, start, end)
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    load_backend()  # the engine imports Keras: load it with its start-up lines filtered
    from decloud.inference.engine import EngineOptions
    from decloud.processors.gapfill import GapFillOptions, gapfill_tile

    options = GapFillOptions(
        window_days=window_days, buffer=buffer,
        bands=tuple(b.strip() for b in bands.split(",") if b.strip()),
        keep_clear=not no_keep_clear, overwrite=overwrite,
        engine=EngineOptions(block_size=block_size, readers=readers, progress=True))
    gapfill_tile(archive, tile, targets, out_dir, options, on_result=_echo)


def _echo(result: TargetResult) -> None:
    """One line per target: date, status, dates read, seconds, output."""
    where = result.output if result.output is not None else "nothing written"
    click.echo(f"{result.target:%Y-%m-%d}  {result.status:9s} {len(result.dates):3d} dates "
               f"{result.seconds:7.1f} s  {where}")
