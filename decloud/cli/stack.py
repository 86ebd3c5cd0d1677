"""``decloud stack``: write the aligned S1 + S2 (+ DEM) stack of a tile and date."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path

import click

from decloud.cli.options import archive_from_options, archive_options
from decloud.errors import SkippedSourceWarning
from decloud.stack import build_stack

__all__ = ["stack"]


@click.command()
@archive_options
@click.option("--tile", required=True, help="Tile id, e.g. T31TEJ.")
@click.option("--date", "day", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Acquisition date of the S2 product (YYYY-MM-DD).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder receiving <TILE>_<YYYYMMDD>/.")
@click.option("--resolution", type=click.Choice(["10", "20"]), default="10", show_default=True,
              help="Output grid: the S2 10 m or 20 m grid.")
@click.option("--s1-max-gap", type=float, default=72.0, show_default=True,
              help="Largest S1-S2 gap in hours.")
@click.option("--window-size", type=click.IntRange(64, 8192), default=1024, show_default=True,
              help="Side of the windows streamed.")
@click.option("--bands", default=None, metavar="B02,B03,...",
              help="S2 bands to stack (default: those of the ten 10 m and 20 m bands the "
                   "product has).")
@click.option("--overwrite", is_flag=True, help="Replace an existing stack folder.")
@click.option("--skip-broken-sources", is_flag=True,
              help="Stack without an S1 file or DEM that exists but cannot be read (warned "
                   "about and recorded in stack.json) instead of failing.")
def stack(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, tile: str, day: datetime, out_dir: Path, resolution: str,
    s1_max_gap: float, window_size: int, bands: str | None, overwrite: bool,
    skip_broken_sources: bool,
) -> None:
    """Write COGs of S2 reflectance, mask, S1 and DEM on one grid, plus quicklooks.

    An S1 file within the gap or a DEM that exists but cannot be read stops the stack
    with an error naming it, unless --skip-broken-sources is given.
    """
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    with warnings.catch_warnings():
        # Skips are reported below, with the stack, not as Python warnings.
        warnings.simplefilter("ignore", SkippedSourceWarning)
        result = build_stack(archive, tile, day.date(), out_dir, resolution=float(resolution),
                             s1_max_gap=timedelta(hours=s1_max_gap), window_size=window_size,
                             bands=tuple(b.strip() for b in bands.split(",")) if bands else None,
                             overwrite=overwrite, progress=True,
                             skip_broken_sources=skip_broken_sources)
    for item in result.skipped:
        click.echo(f"WARNING: {item['sensor'].upper()} {item['file']} cannot be read "
                   f"({item['reason']}): stacked without it (recorded in stack.json)",
                   err=True)
    click.echo(f"S2  {result.s2.name} ({', '.join(result.bands)}; mask: "
               f"{result.s2.mask_origin})")
    if result.s1 is not None:
        gap = abs(result.s1.acquired - result.s2.acquired).total_seconds() / 3600
        click.echo(f"S1  {', '.join(Path(f).name for f in result.s1.files)} (gap {gap:.1f} h)")
    elif any(item["sensor"] == "s1" for item in result.skipped):
        click.echo(f"S1  none readable within {s1_max_gap:g} h (broken file skipped)")
    else:
        click.echo(f"S1  none within {s1_max_gap:g} h")
    skipped_dem = any(item["sensor"] == "dem" for item in result.skipped)
    click.echo(f"DEM {result.dem.path.name if result.dem else 'none'}"
               + (" (broken DEM skipped)" if skipped_dem else ""))
    for key, path in result.files.items():
        click.echo(f"  {key:16s} {path}")
