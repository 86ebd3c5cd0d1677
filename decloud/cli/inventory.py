"""``decloud inventory``: list the products of an archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from tqdm import tqdm

from decloud.archive import Archive
from decloud.cli.options import archive_from_options, archive_options
from decloud.errors import DecloudError
from decloud.grid import RasterPool

__all__ = ["inventory", "inventory_rows"]


def inventory_rows(archive: Archive, *, progress: bool = False) -> list[dict[str, Any]]:
    """One row per product: tile, date, platform, kind, cloud and nodata fractions.

    A product whose rasters cannot be read gets its error in ``problem``.
    """
    rows: list[dict[str, Any]] = []
    for product in tqdm(archive.s2, desc="S2 masks", disable=not progress, leave=False):
        row = _row(product)
        row["mask"] = product.mask_origin
        try:
            cover = product.cover()
            row.update(cloud=cover["cloud"], shadow=cover["shadow"], nodata=cover["nodata"])
        except DecloudError as err:
            row["problem"] = str(err)
        rows.append(row)
    for image in tqdm(archive.s1, desc="S1", disable=not progress, leave=False):
        row = _row(image)
        try:
            with RasterPool() as pool:
                data = image.read(list(image.bands), image.grid(60.0, pool), pool=pool)
            row["nodata"] = float(np.isnan(data).any(axis=0).mean())
        except DecloudError as err:
            row["problem"] = str(err)
        rows.append(row)
    for dem in archive.dems:
        rows.append({"sensor": "DEM", "tile": dem.tile, "date": "", "platform": "", "kind": "dem",
                     "name": dem.path.name})
    return rows


def _row(product: Any) -> dict[str, Any]:
    return {
        "sensor": product.sensor,
        "tile": product.tile,
        "date": product.acquired.strftime("%Y-%m-%d %H:%M"),
        "platform": product.platform,
        "kind": product.kind,
        "orbit": (f"{product.pass_direction or ''} {product.relative_orbit or ''}").strip(),
        "bands": ",".join(product.band_names),
        "name": product.name,
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:5.1f}%"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = ["sensor", "tile", "date (UTC)", "platform", "kind", "orbit", "cloud", "shadow",
              "nodata", "mask", "name"]
    lines = [[
        r["sensor"], r["tile"] or "", r["date"], r["platform"], r["kind"], r.get("orbit", ""),
        _pct(r.get("cloud")), _pct(r.get("shadow")), _pct(r.get("nodata")), r.get("mask", ""),
        r["name"] + (f"  !! {r['problem']}" if r.get("problem") else ""),
    ] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*row) for row in [header, *lines])


@click.command()
@archive_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--strict", is_flag=True, help="Exit non-zero when an entry could not be read.")
def inventory(
    archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
    dem_root: Path | None, as_json: bool, strict: bool,
) -> None:
    """List every product of an archive with its cloud cover and nodata.

    Entries that cannot be read are listed with the reason; the scan goes on.
    """
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    rows = inventory_rows(archive, progress=not as_json)
    problems = [{"path": str(p.path), "reason": p.reason} for p in archive.problems]
    problems += [{"path": r["name"], "reason": r["problem"]} for r in rows if r.get("problem")]
    if as_json:
        click.echo(json.dumps({"tiles": archive.tiles(), "products": rows,
                               "problems": problems}, indent=2))
    else:
        click.echo(f"Tiles: {', '.join(archive.tiles()) or 'none'}; {len(archive.s2)} S2 "
                   f"product(s), {len(archive.s1)} S1 image(s), {len(archive.dems)} DEM(s)")
        click.echo(format_table(rows))
        for problem in problems:
            click.echo(f"skipped {problem['path']}: {problem['reason']}", err=True)
    if strict and problems:
        raise click.ClickException(f"{len(problems)} entr{'y' if len(problems) == 1 else 'ies'}"
                                   " could not be read")
