"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from decloud.archive import Archive

__all__ = ["archive_from_options", "archive_options"]

F = TypeVar("F", bound=Callable[..., Any])

_DIR = click.Path(file_okay=False, path_type=Path)


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
