"""``decloud inventory``: list the products of an archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from decloud.archive import inventory_rows
from decloud.cli.options import archive_from_options, archive_options

__all__ = ["format_table", "inventory"]


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
    # --strict also opens every band and mask file, so a truncated one is reported here.
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root, check_files=strict)
    rows = inventory_rows(archive, progress=not as_json)
    problems = [{"path": str(p.path), "reason": p.reason} for p in archive.problems]
    problems += [{"path": r["path"], "reason": r["problem"]} for r in rows if r.get("problem")]
    if as_json:
        click.echo(json.dumps({"tiles": archive.tiles(), "products": rows,
                               "problems": problems}, indent=2))
    else:
        click.echo(f"Tiles: {', '.join(archive.tiles()) or 'none'}; {len(archive.s2)} S2 "
                   f"product(s), {len(archive.s1)} S1 image(s), {len(archive.dems)} DEM(s), "
                   f"{len(problems)} failed")
        click.echo(format_table(rows))
        for problem in problems:
            click.echo(f"failed {problem['path']}: {problem['reason']}", err=True)
        for row in rows:
            for warning in row.get("warnings", ()):
                click.echo(f"warning {row['path']}: {warning}", err=True)
    if strict and problems:
        first, n = problems[0], len(problems)
        raise click.ClickException(f"{n} entr{'y' if n == 1 else 'ies'} could not be read; "
                                   f"{first['path']}: {first['reason']}")
