"""``decloud export``: a trained ``.keras`` model as a TF SavedModel (OTBTF) or ONNX."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from decloud.cli.backend import load_backend
from decloud.errors import ExportError

__all__ = ["export"]

#: decloud.models.otbtf.DEFAULT_EFIELD, written out: importing decloud.models would load
#: Keras when the CLI starts (a test checks they agree).
_DEFAULT_EFIELD = 1024


@click.command()
@click.argument("model_path", metavar="MODEL.keras",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["savedmodel", "onnx"]), required=True,
              help="savedmodel: TF SavedModel for OTBTF (with otbtf.json); onnx: ONNX graph.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="The SavedModel folder or the .onnx file to create.")
@click.option("--config", default=None,
              help="Model name or YAML configuration (default: the model_card.json next to "
                   "the model).")
@click.option("--margin", type=click.IntRange(min=0), default=None,
              help="SavedModel: pixels cropped on each side of the outputs (10 m px); default "
                   "half the receptive field, rounded up to the size multiple. A margin "
                   "below half the receptive field is refused (seams).")
@click.option("--efield", type=click.IntRange(min=1), default=_DEFAULT_EFIELD, show_default=True,
              help="SavedModel: output patch side of the OTBTF command lines (10 m px); "
                   "large fields are faster, runs cut it to the input.")
@click.option("--opset", type=click.IntRange(min=7), default=17, show_default=True,
              help="ONNX opset.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the export with the Keras model on random inputs.")
@click.option("--tol", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Largest difference allowed by the check (normalised units).")
def export(model_path: Path, fmt: str, out: Path, config: str | None, margin: int | None,
           efield: int, opset: int, overwrite: bool, check: bool, tol: float) -> None:
    """Export a trained MODEL.keras as a TF SavedModel (for OTBTF) or ONNX.

    The SavedModel takes the dataset keys (s2_t, s1_t, dem...) as float32 NHWC inputs
    and gives each output twice: whole, and cropped by the margin (<key>_crop<m>), the
    one OTBTF's TensorflowModelServe writes. Its otbtf.json holds one command per
    output resolution (10 m and 20 m), all printed; the SavedModel folder is named by
    its absolute path. A failed check removes the export and exits with status 1.
    """
    load_backend()
    from decloud.models.export import (
        OTBTF_FILE,
        check_agreement,
        export_onnx,
        export_savedmodel,
        load_for_export,
    )

    model, spec = load_for_export(model_path, config)
    if fmt == "savedmodel":
        path = export_savedmodel(model, spec, out, margin=margin, efield=efield,
                                 overwrite=overwrite)
    else:
        path = export_onnx(model, spec, out, opset=opset, overwrite=overwrite)
    click.echo(f"{fmt}: {path}")
    if check:
        try:
            diffs = check_agreement(model, spec,
                                    savedmodel_dir=path if fmt == "savedmodel" else None,
                                    onnx_path=path if fmt == "onnx" else None, tol=tol)
        except ExportError:
            # An export that disagrees with its model must not be served.
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            raise
        for name, diff in diffs.items():
            click.echo(f"  {name}: max abs difference {diff:.3g} (normalised, tol {tol:g})")
    if fmt == "savedmodel":
        settings = json.loads((path / OTBTF_FILE).read_text())
        if not settings["servable"]:
            click.echo(f"not servable by OTBTF: {settings['reason']}")
            return
        click.echo(f"OTBTF (inputs: {settings['padding']}):")
        for key, command in settings["commands"].items():
            click.echo(f"  {key}: {command}")
