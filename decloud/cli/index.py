"""``decloud index``: build, update and describe the patch index of an archive."""

from __future__ import annotations

import json
from pathlib import Path

import click

from decloud.cli.options import archive_from_options, archive_options
from decloud.index import AddReport, Catalog
from decloud.index.catalog import JournalMode

__all__ = ["index"]


@click.group()
def index() -> None:
    """The spatio-temporal patch index (catalog + R-tree) of an archive."""


def _report(report: AddReport, catalog: Catalog, *, strict: bool = False) -> None:
    click.echo(f"added {len(report.added)} product(s), {len(report.skipped)} already indexed, "
               f"{len(report.failed)} failed; catalog holds {catalog.count('S2')} S2 and "
               f"{catalog.count('S1')} S1 product(s)")
    for path, reason in report.failed.items():
        click.echo(f"failed {path}: {reason}", err=True)
    if strict and report.failed:
        n = len(report.failed)
        path, reason = next(iter(report.failed.items()))
        raise click.ClickException(f"{n} entr{'y' if n == 1 else 'ies'} could not be indexed; "
                                   f"{path}: {reason}")


_STRICT = click.option("--strict", is_flag=True,
                       help="Exit non-zero when an entry could not be read or indexed (the "
                            "others are indexed all the same).")


def _journal(catalog: Catalog) -> None:
    # WAL on a local disk is the usual case; anything else is worth a line.
    if catalog.journal_mode != "wal":
        click.echo(f"catalog journal: {catalog.journal_mode} ({catalog.journal_reason})")


_JOURNAL = click.option(
    "--journal-mode", type=click.Choice(["auto", "wal", "delete"]), default="auto",
    show_default=True,
    help="SQLite journal of the catalog: auto = DELETE on a shared filesystem (NFS, Lustre, "
         "GPFS, CIFS, BeeGFS, Ceph, FUSE), where WAL is unsafe, else WAL.")


@index.command()
@archive_options
@click.option("--catalog", "folder", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Catalog folder to create.")
@click.option("--patch-size", type=int, default=64, show_default=True,
              help="Side of the elementary patches, 10 m pixels.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Products whose statistics are computed at once.")
@_STRICT
@_JOURNAL
def build(archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
          dem_root: Path | None, folder: Path, patch_size: int, workers: int,
          strict: bool, journal_mode: JournalMode) -> None:
    """Create a catalog and index every product of an archive.

    Every band and mask file is opened first: an unreadable product is skipped, listed
    with the reason and counted as failed. Interrupted builds resume with
    `decloud index add`: products already indexed are kept.
    """
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root, check_files=True)
    with Catalog.create(folder, patch_size=patch_size, journal_mode=journal_mode) as catalog:
        _journal(catalog)
        _report(catalog.add(archive, workers=workers, progress=True), catalog, strict=strict)


@index.command()
@archive_options
@click.option("--catalog", "folder", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Existing catalog folder.")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Products whose statistics are computed at once.")
@_STRICT
@_JOURNAL
def add(archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
        dem_root: Path | None, folder: Path, workers: int, strict: bool,
        journal_mode: JournalMode) -> None:
    """Add the products of an archive that the catalog does not hold yet."""
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root, check_files=True)
    with Catalog.open(folder, journal_mode=journal_mode) as catalog:
        _journal(catalog)
        _report(catalog.add(archive, workers=workers, progress=True), catalog, strict=strict)


@index.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(folder: Path, as_json: bool) -> None:
    """Describe a catalog: patch size, products per tile and sensor, dates."""
    with Catalog.open(folder) as catalog:
        summary = catalog.info()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"catalog {summary['folder']}: {summary['products']} product(s), patches of "
               f"{summary['patch_size']} px")
    for tile, sensors in summary["tiles"].items():
        for sensor, s in sensors.items():
            click.echo(f"  {tile}  {sensor}  {s['products']:5d}  {s['first']} .. {s['last']}")
