"""``decloud export``: a trained ``.keras`` model as a TF SavedModel (OTBTF) or ONNX."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from decloud.errors import ExportError

if TYPE_CHECKING:
    import keras

    from decloud.models.zoo import ModelSpec

__all__ = ["export", "load_for_export"]


def load_for_export(model_path: Path, config: str | None = None,
                    ) -> tuple[keras.Model, ModelSpec]:
    """Load a ``.keras`` model and rebuild its spec.

    The spec (receptive field, size multiple, inputs and outputs) is rebuilt from
    ``config`` (a registered name or a YAML file) when given, else from the
    configuration in the model card (``model_card.json``) next to the model. It must
    name the model's inputs, with their channels.

    Args:
        model_path: The ``.keras`` file.
        config: A model name or configuration file, or None to read the model card.

    Returns:
        The Keras model and its :class:`~decloud.models.ModelSpec`.

    Raises:
        ExportError: The model cannot be read, no configuration is found, or it does
            not describe the model.
        ModelCardError: The model card cannot be read.
    """
    import keras  # heavy: only for this command

    from decloud.models import build, get_config
    from decloud.models.card import CARD_FILE, card_spec, load_model

    if config is None:
        if not (model_path.parent / CARD_FILE).is_file():
            raise ExportError(f"no {CARD_FILE} next to the model: pass --config NAME (or a "
                              "YAML file) to rebuild its spec", path=model_path)
        model, card = load_model(model_path)
        spec = card_spec(card)
        name = str(card.get("name"))
    else:
        # The custom layers, losses and metrics register themselves on import.
        from decloud.models import losses, metrics, normalization, zoo  # noqa: F401

        model_config = get_config(config)
        try:
            model = keras.saving.load_model(model_path, compile=False)
        except (OSError, ValueError, TypeError) as err:
            raise ExportError(f"cannot load the model ({err})", path=model_path) from err
        _, spec = build(model_config)
        name = model_config.name
    inputs = {k: int(t.shape[-1]) for k, t in dict(model.input).items()}
    expected = {k: s.channels for k, s in spec.inputs.items()}
    if inputs != expected:
        raise ExportError(f"the configuration {name!r} takes {expected}, the model takes "
                          f"{inputs} (input: channels)", path=model_path, field="config")
    return model, spec


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
                   "half the receptive field, rounded up to the size multiple.")
@click.option("--efield", type=click.IntRange(min=1), default=256, show_default=True,
              help="SavedModel: output patch side of the OTBTF command line (10 m px).")
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
    one OTBTF's TensorflowModelServe writes. Its otbtf.json holds the command line.
    A failed check removes the export and exits with status 1.
    """
    from decloud.models.export import (
        OTBTF_FILE,
        check_agreement,
        export_onnx,
        export_savedmodel,
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
        click.echo(settings["command"] or f"not servable by OTBTF: {settings['reason']}")
