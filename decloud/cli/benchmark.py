"""``decloud benchmark quality|landcover``: reconstruction quality on real cut clouds."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from decloud.cli.backend import load_backend
from decloud.cli.options import archive_from_options, archive_options

if TYPE_CHECKING:
    from decloud.archive import Archive
    from decloud.benchmark.quality import CutFill, CutMask, QualityOptions
    from decloud.products import S2Product

__all__ = ["benchmark"]


@click.group()
def benchmark() -> None:
    """Measure the reconstruction methods on real clouds cut into clear dates.

    quality: every method that fits the archive, scored per cloud-cover bucket
    (tables, plots, quicklooks, an HTML report). landcover: a random forest trained
    on a clear date classifies the truth, the cloudy image and each reconstruction.
    """


def _common(func: Any) -> Any:
    for option in reversed([
        click.option("--tile", required=True, help="Tile id, e.g. T33TVM."),
        click.option("--csmask", "csmask", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Also transplant the real cumulus and shadow masks "
                     "of this ukis-csmask npz (tests/data/csmask_cloudy.npz)."),
        click.option("--csmask-count", default=4, show_default=True,
                     type=click.IntRange(1, 64), help="Windows taken from --csmask."),
        click.option("--archive-cuts/--no-archive-cuts", default=True, show_default=True,
                     help="Cut the cloud and shadow masks of the tile's other dates."),
        click.option("--method", "methods", multiple=True,
                     help="A method of the registry (repeatable; all that fit by default)."),
        click.option("--model", "models", multiple=True,
                     type=click.Path(exists=True, path_type=Path),
                     help="A trained model (.keras with its card) to benchmark too."),
        click.option("--layout", default=None,
                     help="Acquisition layout of multi-temporal --model (name or YAML)."),
        click.option("--fill", default="constant", show_default=True,
                     help="Reflectance under the cut: constant (the csmask cloud and "
                     "shadow spectra), nodata, or overcast:YYYY-MM-DD (the real values "
                     "of that overcast date of the tile)."),
        click.option("--window-days", default=60.0, show_default=True, type=float,
                     help="Dates within this many days of a reference make its series."),
        click.option("--max-reference-cloud", default=0.01, show_default=True, type=float,
                     help="Largest cloud + shadow fraction of a reference."),
        click.option("--out", "out_dir", required=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Output folder (report, tables, plots; work files in work/)."),
        click.option("--keep", is_flag=True, help="Keep the working copies and outputs."),
    ]):
        func = option(func)
    return func


def _fill(archive: Archive, tile: str, text: str) -> CutFill:
    from decloud.benchmark.quality import CutFill

    if text in ("constant", "nodata"):
        return CutFill(text)  # type: ignore[arg-type]
    if text.startswith("overcast:"):
        try:
            day = datetime.strptime(text.removeprefix("overcast:"), "%Y-%m-%d").date()
        except ValueError as err:  # a usage error, not a traceback
            raise click.BadParameter(f"{text!r}: overcast:YYYY-MM-DD takes a real date "
                                     f"({err})", param_hint="--fill") from err
        return CutFill("overcast", archive.find_s2(tile, day))
    raise click.BadParameter(f"{text!r}: constant, nodata or overcast:YYYY-MM-DD",
                             param_hint="--fill")


def _cuts(archive: Archive, tile: str, refs: list[S2Product], grid_of: S2Product,
          archive_cuts: bool, csmask: Path | None, count: int) -> list[CutMask]:
    from decloud.benchmark.quality import masks_from_archive, masks_from_csmask

    grid = grid_of.grid()
    cuts = masks_from_archive(archive, tile, grid, exclude=refs) if archive_cuts else []
    if csmask is not None:
        cuts += masks_from_csmask(csmask, grid.shape, count=count)
    if not cuts:
        raise click.UsageError("no cut mask: the tile has no cloudy date (give --csmask)")
    return cuts


def _options(methods: tuple[str, ...], models: tuple[Path, ...], layout: str | None,
             fill: CutFill, window_days: float, max_reference_cloud: float, keep: bool,
             raw: bool = True) -> QualityOptions:
    from decloud.benchmark.quality import ModelMethod, QualityOptions

    extra = tuple(ModelMethod(Path(m), layout) for m in models)
    return QualityOptions(methods=methods, extra_methods=extra, window_days=window_days,
                          fill=fill, max_reference_cloud=max_reference_cloud,
                          keep_outputs=keep, raw=raw)


@benchmark.command()
@archive_options
@_common
@click.option("--reference", "references", multiple=True,
              type=click.DateTime(["%Y-%m-%d"]),
              help="Reference date (repeatable; every clear date of the tile by default). "
              "A cloudy reference is refused.")
def quality(archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
            dem_root: Path | None, tile: str, csmask: Path | None, csmask_count: int,
            archive_cuts: bool, methods: tuple[str, ...], models: tuple[Path, ...],
            layout: str | None, fill: str, window_days: float, max_reference_cloud: float,
            out_dir: Path, keep: bool, references: tuple[datetime, ...]) -> None:
    """Cut real clouds into clear dates, reconstruct with every method, score.

    Writes OUT/quality.json, quality.md, quality_plot.png and quality.html.
    """
    from decloud.benchmark.quality import (
        check_reference,
        clear_references,
        goal_check,
        run_quality,
        summary_markdown,
        summary_rows,
        write_quality_outputs,
    )

    started = time.perf_counter()
    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    if "patch_gapfill" in (methods or ("patch_gapfill",)) or models:
        load_backend()  # the patch-level gap-filling and the models are Keras models
    if references:
        refs = [archive.find_s2(tile, d.date()) for d in references]
        for ref in refs:
            check_reference(ref, max_cloud=max_reference_cloud)
    else:
        refs = clear_references(archive, tile, max_cloud=max_reference_cloud)
    if not refs:
        raise click.UsageError(f"tile {tile} has no clear date to be a reference")
    cuts = _cuts(archive, tile, refs, refs[0], archive_cuts, csmask, csmask_count)
    options = _options(methods, models, layout, _fill(archive, tile, fill), window_days,
                       max_reference_cloud, keep)
    click.echo(f"{len(refs)} reference(s) x {len(cuts)} cut(s) on {tile}")
    def progress(row: dict[str, Any]) -> None:
        psnr = row["scores"]["regions"]["reconstructed"]["overall"]["psnr"]
        click.echo(f"  {row['date']} {row['cut']:<28} {row['cut_percent']:6.1f} % "
                   f"{row['label']:<26} PSNR "
                   f"{'no pixels' if psnr is None else f'{psnr:.2f} dB'}")

    result = run_quality(archive, tile, cuts, out_dir / "work", options, references=refs,
                         on_row=progress)
    paths = write_quality_outputs(result, out_dir, meta={
        "archive": str(archive_root or s2_root), "tile": tile,
        "references": ", ".join(r.name for r in refs), "fill": options.fill.describe(),
        "cuts": len(cuts)})
    rows = summary_rows(result)
    click.echo(summary_markdown(rows, goal_check(rows)))
    click.echo(f"done in {time.perf_counter() - started:.1f} s")
    click.echo(f"HTML report: {paths['html']}")


@benchmark.command()
@archive_options
@_common
@click.option("--labels", required=True, type=click.Path(exists=True, path_type=Path),
              help="Label map raster on the tile's 10 m grid (classes; 0 = no data).")
@click.option("--train-date", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Clear date the forest is trained on.")
@click.option("--test-date", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="Clear date cut, reconstructed and classified.")
@click.option("--seed", default=0, show_default=True, help="Seed of the split and forest.")
def landcover(archive_root: Path | None, s2_root: Path | None, s1_root: Path | None,
              dem_root: Path | None, tile: str, csmask: Path | None, csmask_count: int,
              archive_cuts: bool, methods: tuple[str, ...], models: tuple[Path, ...],
              layout: str | None, fill: str, window_days: float, max_reference_cloud: float,
              out_dir: Path, keep: bool, labels: Path, train_date: datetime,
              test_date: datetime, seed: int) -> None:
    """Classify the truth, the cloudy image and each reconstruction with a random forest.

    Writes OUT/landcover.json and landcover.md.
    """
    from decloud.benchmark.landcover import landcover_benchmark

    archive = archive_from_options(archive_root, s2_root, s1_root, dem_root)
    if "patch_gapfill" in (methods or ("patch_gapfill",)) or models:
        load_backend()
    train = archive.find_s2(tile, train_date.date())
    test = archive.find_s2(tile, test_date.date())
    cuts = _cuts(archive, tile, [train, test], test, archive_cuts, csmask, csmask_count)
    options = _options(methods, models, layout, _fill(archive, tile, fill), window_days,
                       max_reference_cloud, keep, raw=False)
    paths = landcover_benchmark(archive, tile, train, test, labels, cuts, out_dir, options,
                                seed=seed)
    click.echo(paths["md"].read_text(encoding="utf-8"))
