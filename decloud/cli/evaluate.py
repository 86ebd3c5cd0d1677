"""``decloud evaluate``: full-image metrics of a prediction against a reference."""

from __future__ import annotations

import json
from pathlib import Path

import click

from decloud.errors import OutputExistsError

__all__ = ["evaluate"]

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _bands(value: str | None) -> list[str] | None:
    return [b.strip() for b in value.split(",") if b.strip()] if value else None


@click.command()
@click.argument("pred", type=_FILE)
@click.argument("ref", type=_FILE)
@click.option("--mask", type=_FILE, default=None,
              help="Cloud mask raster on the same grid: reconstructed where set (non-zero), "
                   "clear where 0.")
@click.option("--quality", type=_FILE, default=None,
              help="The engine's quality layer (<out>_quality.tif): reconstructed and "
                   "feathered pixels vs clear ones.")
@click.option("--input", "cloudy", type=_FILE, default=None,
              help="The cloudy input the prediction was made from (shown in the report's "
                   "quicklooks only; needs bands B04, B03, B02).")
@click.option("--bands", default=None,
              help="Comma-separated bands to score (e.g. B04,B03,B02,B08); default: all, "
                   "which must be the same in both rasters.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder of evaluation.json, .md and .html "
                                 "[default: <PRED stem>_evaluation beside PRED].")
@click.option("--block", type=click.IntRange(16, 16384), default=1024, show_default=True,
              help="Side of the blocks read at a time (memory), px.")
@click.option("--data-range", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Data range of PSNR and SSIM (reflectance: 1).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation in --out.")
def evaluate(pred: Path, ref: Path, mask: Path | None, quality: Path | None,
             cloudy: Path | None, bands: str | None, out_dir: Path | None, block: int,
             data_range: float, overwrite: bool) -> None:
    """Score PRED against REF per band and overall (MAE, RMSE, PSNR, SSIM, SAM, CC).

    Every figure is given on all valid pixels and, with --mask or --quality, on the
    reconstructed and the clear pixels, with the pixel count behind it ("no pixels"
    where a region is empty). The rasters are read block by block (bounded memory);
    the results equal a whole-image computation. Writes evaluation.json, evaluation.md
    and a self-contained evaluation.html, each atomically.
    """
    from decloud.evaluation.metrics import score_rasters
    from decloud.evaluation.report import check_cloudy_input, evaluation_report
    from decloud.writers import atomic_file

    out_dir = out_dir or pred.with_name(f"{pred.stem}_evaluation")
    paths = {kind: out_dir / f"evaluation.{kind}" for kind in ("json", "md", "html")}
    if not overwrite:
        for path in paths.values():
            if path.exists():
                raise OutputExistsError("exists already (pass --overwrite to replace it)",
                                        path=path)
    engine_quality = pred.with_name(f"{pred.stem}_quality.tif")
    if mask is None and quality is None and engine_quality.exists():
        click.echo(f"(only region 'all': pass --quality {engine_quality} to split "
                   "reconstructed and clear pixels)", err=True)
    if cloudy is not None:  # before scoring: nothing is written for a bad input
        check_cloudy_input(cloudy, pred)
    scores = score_rasters(pred, ref, mask=mask, quality=quality, bands=_bands(bands),
                           block=block, data_range=data_range)
    inputs = {"prediction": str(pred), "reference": str(ref),
              "mask": None if mask is None else str(mask),
              "quality": None if quality is None else str(quality),
              "input": None if cloudy is None else str(cloudy)}
    record = {**inputs, "block": block, **scores.to_dict()}
    table = scores.to_markdown()
    markdown = (f"# Evaluation of {pred.name}\n\n"
                + "".join(f"- {k}: `{v}`\n" for k, v in inputs.items() if v is not None)
                + f"\n{table}\nData range {data_range:g}. PSNR per band from the band's MSE, "
                  "overall from the MSE pooled over bands; SAM: mean spectral angle, "
                  "degrees; SSIM pixels: those whose whole 11 x 11 window is valid.\n")
    # The HTML last: a folder with the report holds the other two.
    with atomic_file(paths["json"], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    with atomic_file(paths["md"], overwrite=overwrite) as tmp:
        tmp.write_text(markdown)
    evaluation_report(paths["html"], scores, pred, ref, mask=mask, quality=quality,
                      cloudy=cloudy, overwrite=overwrite)
    click.echo(table)
    for path in paths.values():
        click.echo(path)
