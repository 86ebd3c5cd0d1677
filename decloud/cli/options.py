"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from decloud.archive import Archive

if TYPE_CHECKING:
    from decloud.inference.engine import EngineOptions, RunRecord

__all__ = [
    "archive_from_options",
    "archive_options",
    "check_model",
    "engine_from_options",
    "engine_options",
    "model_options",
    "run_summary",
]

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
                     help="Core block side, pixels [default: 1024 on CPU, 2048 on GPU]."),
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
    ])


def engine_from_options(block_size: int | None, batch_size: int, readers: int, dilation: int,
                        feather: int, no_composite: bool, overwrite: bool) -> EngineOptions:
    """The engine options that :func:`engine_options` asked for (progress bar on)."""
    from decloud.inference.composite import CompositeOptions
    from decloud.inference.engine import EngineOptions

    return EngineOptions(block_size=block_size, batch_size=batch_size, readers=readers,
                         target=None if no_composite else "t",
                         composite=CompositeOptions(dilation=dilation, feather=feather),
                         overwrite=overwrite, progress=True)


def run_summary(out: Path, record: RunRecord, extra: str = "") -> str:
    """One line on a finished run: blocks, time, and its clear/reconstructed/nodata share."""
    pixels = record.pixels
    total = max(1, sum(pixels.values()))
    return (f"{out}: {record.blocks['total']} blocks ({record.blocks['skipped']} skipped{extra}) "
            f"in {record.timing['wall_s']:.1f} s; clear {pixels['clear'] / total:.1%}, "
            f"reconstructed {(pixels['reconstructed'] + pixels['feathered']) / total:.1%}, "
            f"nodata {pixels['nodata'] / total:.1%}")
