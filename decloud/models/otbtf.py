"""OTBTF serving of decloud's SavedModel exports: geometry, checks and command lines.

:func:`~decloud.models.export.export_savedmodel` writes, next to ``saved_model.pb``,
``otbtf.json`` (:func:`otbtf_settings`): the margin, the inputs and one
``otbcli_TensorflowModelServe`` command per output resolution. :func:`otbtf_command`
builds the command for given rasters and expression field; the ``--engine otbtf``
runner (:mod:`decloud.inference.otbtf`) uses it on padded per-key rasters.

Geometry, in pixels of the models' 10 m grid:

* ``m`` (margin): pixels dropped on each side of every output patch. A margin below
  half the receptive field leaves output pixels whose receptive field crosses the
  patch border (errors up to 0.25 reflectance at seams with 16 px on ``msop_small``),
  so it is refused (:class:`~decloud.errors.MarginTooSmallError`).
* ``efield`` (expression field): the side of the output patch one model run writes.
  OTBTF's output starts ``m`` px inside its inputs and covers a whole number of
  expression fields, so the inputs are padded by ``m`` (nodata) on the top and left
  and by ``m`` plus the rest to a whole number of fields on the bottom and right
  (:func:`padded_size`): the output then covers the whole input, and is cropped back.
* OTBTF's per-source ``rfield`` is the side of the input patch it extracts: the model
  receives ``efield + 2m`` pixels, and the ``_crop<m>`` output is the central
  ``efield`` pixels. A 20 m source gets half of it.

Speed: OTBTF computes one expression field per model run, and the OTB writer asks
for regions of its own choosing (stripes sized by ``OTB_MAX_RAM_HINT``, 256 MB by
default). Stripes that do not line up with the fields make OTBTF recompute each field
up to 4 times: on 2048 x 2048 px, ``msop_small``, 2 cores, 63 s with tiles of 256 px
and the default RAM hint, 27 s with ``OTB_MAX_RAM_HINT=4000``, 17 s with a writer
tiled on the fields, 7.7 s with one large field (Keras' whole-image predict: 4.8 s).
The commands therefore use a large field (:data:`DEFAULT_EFIELD`, cut to the input),
``-optim.tilesizex/y`` equal to it, a writer streaming tiles of exactly one field
(``?&streaming:type=tiled&streaming:sizemode=height&streaming:sizevalue=<efield>``),
``-optim.disabletiling on`` when one field covers the input, and a RAM hint
(:data:`DEFAULT_RAM_HINT_MB`) large enough that OTB never splits a field in its
memory estimate.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from decloud.errors import ExportError, MarginTooSmallError, ModelInputSizeError

if TYPE_CHECKING:
    from decloud.models.zoo import InputSpec, ModelSpec

__all__ = [
    "DEFAULT_EFIELD",
    "DEFAULT_RAM_HINT_MB",
    "EXECUTABLE",
    "OTBTF_FILE",
    "OtbtfCommand",
    "crop_name",
    "field_step",
    "minimum_margin",
    "otbtf_command",
    "otbtf_settings",
    "padded_size",
    "serving_efield",
]

#: Default OTBTF expression field (output patch side), in 10 m pixels: large, so
#: that few model runs cover a scene (see the module's speed notes).
DEFAULT_EFIELD = 1024
#: ``OTB_MAX_RAM_HINT`` of the commands (MB): above what one field of the largest
#: models needs, so OTB's writer never splits a field.
DEFAULT_RAM_HINT_MB = 4096
#: OTBTF's application.
EXECUTABLE = "otbcli_TensorflowModelServe"
#: Serving settings written next to ``saved_model.pb``.
OTBTF_FILE = "otbtf.json"
#: The SavedModel signature OTBTF reads.
SERVING_SIGNATURE = "serving_default"
#: Pixel size of the grid the models work on, metres.
_GRID = 10.0


def crop_name(key: str, crop: int) -> str:
    """Name of the cropped copy of an output (``crop`` in that output's pixels)."""
    return f"{key}_crop{crop}"


def is_image(spec: InputSpec) -> bool:
    """Whether an input has pixels (the ``dt_*`` days have none)."""
    return spec.resolution > 0


def per_pixel(value: int, resolution: float, what: str) -> int:
    """A length of ``value`` 10 m pixels in pixels of ``resolution``; must be whole."""
    ratio = resolution / _GRID
    if value % ratio:
        raise ExportError(f"{what} of {value} px at 10 m is not a whole number of "
                          f"{resolution:g} m pixels", field=what)
    return int(value / ratio)


def minimum_margin(receptive_field: int) -> int:
    """The smallest margin (10 m px) that serves without seams: half the receptive field."""
    return math.ceil(receptive_field / 2)


def check_geometry(spec: ModelSpec, margin: int | None, efield: int) -> int:
    """The margin to use, after checking margin and efield against the model's sizes.

    Raises:
        MarginTooSmallError: A margin below half the receptive field.
        ExportError: A margin or efield that is not a multiple of the size multiple
            (or not a whole number of 20 m pixels).
    """
    m = spec.margin if margin is None else margin
    k = spec.size_multiple
    least = minimum_margin(spec.receptive_field)
    if m < least:
        raise MarginTooSmallError(
            f"model {spec.name}: margin {m} px is below half the receptive field "
            f"({spec.receptive_field} px): the minimum is {least} px (default {spec.margin})",
            field="margin")
    try:
        spec.crops(m)
    except ModelInputSizeError as err:
        raise ExportError(f"margin {m} must be >= 0 and a multiple of the size multiple {k} "
                          f"({err.message})", field="margin") from err
    try:
        spec.check_size(efield, efield)
    except ModelInputSizeError as err:
        raise ExportError(f"expression field {efield} must be > 0 and a multiple of the size "
                          f"multiple {k}", field="efield") from err
    for s in [*spec.inputs.values(), *spec.outputs.values()]:
        if is_image(s):
            per_pixel(m, s.resolution, "margin")
            per_pixel(efield, s.resolution, "efield")
    return m


def sources(spec: ModelSpec) -> list[InputSpec]:
    """Inputs in OTBTF source order: 10 m first (source1 sets the output grid), DEM last."""
    return sorted(spec.inputs.values(), key=lambda s: (s.resolution != _GRID, s.key == "dem"))


def rfield(out_resolution: float, efield_out: int, crop_out: int,
           source_resolution: float) -> int:
    """OTBTF ``rfield`` of a source so that the model receives ``efield + 2 crop`` output px.

    OTBTF (``TensorflowMultisourceModelFilter::GenerateInputRequestedRegion``) maps an
    output tile of ``efield`` px onto each source (``efield * ratio`` source px, ``ratio``
    being the output over the source spacing) and pads it by ``rfield - int(1 + (efield
    - 1) * ratio)`` px; solved here for a padded patch of ``(efield + 2 crop) * ratio``
    px. For a source at the output's resolution this is ``efield + 2 crop``; a 20 m source
    of a 10 m output gets half of it.
    """
    ratio = out_resolution / source_resolution
    patch = (efield_out + 2 * crop_out) * ratio
    region = efield_out * ratio
    return int(patch - region + math.floor(1 + (efield_out - 1) * ratio))


def field_step(size_multiple: int, resolutions: list[float]) -> int:
    """The step (10 m px) of valid expression fields: the size multiple, whole at 20 m."""
    ratios = [int(r / _GRID) for r in resolutions if r > 0]
    return math.lcm(size_multiple, *ratios) if ratios else size_multiple


def serving_efield(width: int, height: int, efield: int, step: int) -> int:
    """The expression field for an input of ``width`` x ``height`` (10 m px).

    ``efield`` when the input is larger, else the input's longer side rounded up to
    ``step``: one field then covers the whole input (no model run on padding only).
    """
    if efield <= 0 or efield % step:
        raise ExportError(f"expression field {efield} must be > 0 and a multiple of {step}",
                          field="efield")
    return min(efield, -(-max(width, height) // step) * step)


def padded_size(width: int, height: int, margin: int, efield: int, *,
                coarse: bool = False) -> tuple[int, int, int, int]:
    """Padded input size and field counts: ``(padded_w, padded_h, fields_x, fields_y)``.

    The input is padded by ``margin`` on the top and left; on the bottom and right by
    ``margin`` plus what makes the output a whole number of fields, which OTBTF needs
    (it cuts its output to a multiple of the field).

    ``coarse`` (a 20 m input or output): one more 20 m pixel (2 px) on the bottom and
    right. OTBTF's output extent is the intersection of its sources' extents shrunk by
    their ``rfield``; a 10 m source of a 20 m output has an odd ``rfield`` (``2 n - 1``)
    and its extent ends half a 20 m pixel short, so without that pixel OTBTF's output
    loses its last row and column of fields (one field: "Output grid size is larger
    than output image size").
    """
    nx, ny = -(-width // efield), -(-height // efield)
    extra = 2 if coarse else 0
    return nx * efield + 2 * margin + extra, ny * efield + 2 * margin + extra, nx, ny


@dataclass(frozen=True)
class OtbtfCommand:
    """One ``otbcli_TensorflowModelServe`` run: its arguments and environment.

    Attributes:
        key: The output key it writes.
        args: The command line, executable first.
        env: Variables to set: ``OTB_TF_NSOURCES`` (more than one source) and
            ``OTB_MAX_RAM_HINT``.
        efield: Output field in the output's pixels.
        output: The ``-out`` file (without OTB's extended filename).
    """

    key: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    efield: int = 0
    output: str = ""

    def shell(self) -> str:
        """The command as one shell line, environment first."""
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{env} {shlex.join(self.args)}" if env else shlex.join(self.args)


def otbtf_command(settings: Mapping[str, Any], output_key: str,
                  rasters: Mapping[str, str], out: str, *, efield: int,
                  fields: tuple[int, int] = (2, 2),
                  ram_hint_mb: int = DEFAULT_RAM_HINT_MB) -> OtbtfCommand:
    """The command serving one output of an export on given (padded) key rasters.

    Args:
        settings: The export's ``otbtf.json`` (:func:`otbtf_settings`).
        output_key: The output to write (``s2_t`` ...: one command per resolution).
        rasters: The raster of every input key (padded by the margin, see
            :func:`padded_size`).
        out: The output file OTBTF writes.
        efield: The expression field, 10 m px (a multiple of :func:`field_step`).
        fields: Fields across and down the output: one field in all disables
            OTBTF's tiling.
        ram_hint_mb: ``OTB_MAX_RAM_HINT``.

    Returns:
        The command.

    Raises:
        ExportError: An unknown output, a missing raster, a bad field, or an export
            OTBTF cannot serve.
    """
    if not settings.get("servable", True):
        raise ExportError(f"model {settings.get('model')} cannot be served by OTBTF: "
                          f"{settings.get('reason')}", field="model")
    outputs = {o["key"]: o for o in settings["outputs"]}
    if output_key not in outputs:
        raise ExportError(f"no output {output_key!r} in the export (it has {sorted(outputs)})",
                          field="output")
    entry = outputs[output_key]
    inputs = list(settings["inputs"])
    missing = [i["placeholder"] for i in inputs if i["placeholder"] not in rasters]
    if missing:
        raise ExportError(f"no raster for inputs {missing}", field="rasters")
    resolutions = [float(i["resolution_m"]) for i in inputs] + [
        float(o["resolution_m"]) for o in settings["outputs"]]
    step = field_step(int(settings["size_multiple"]), resolutions)
    if efield <= 0 or efield % step:
        raise ExportError(f"expression field {efield} must be > 0 and a multiple of {step}",
                          field="efield")
    res = float(entry["resolution_m"])
    crop = int(entry["crop_px"])
    eo = per_pixel(efield, res, "efield")
    reference = float(inputs[0]["resolution_m"])
    scale = res / reference
    args = [EXECUTABLE]
    for n, i in enumerate(inputs, start=1):
        rf = str(rfield(res, eo, crop, float(i["resolution_m"])))
        args += [f"-source{n}.il", str(rasters[i["placeholder"]]), f"-source{n}.rfieldx", rf,
                 f"-source{n}.rfieldy", rf, f"-source{n}.placeholder", i["placeholder"]]
    args += ["-model.dir", str(settings["model_dir"]), "-model.fullyconv", "on",
             "-output.names", str(entry["name"]),
             "-output.efieldx", str(eo), "-output.efieldy", str(eo)]
    if scale != 1:
        args += ["-output.spcscale", f"{scale:g}"]
    if fields[0] * fields[1] == 1:
        # One field: one model run on the whole input, no streaming at all.
        args += ["-optim.disabletiling", "on"]
        target = f"{out}?&streaming:type=none"
    else:
        # OTBTF's tiles and the writer's tiles are the same fields: each is computed once.
        args += ["-optim.tilesizex", str(eo), "-optim.tilesizey", str(eo)]
        target = f"{out}?&streaming:type=tiled&streaming:sizemode=height&streaming:sizevalue={eo}"
    args += ["-out", target, "float"]
    env = {"OTB_MAX_RAM_HINT": str(ram_hint_mb)}
    if len(inputs) > 1:
        env = {"OTB_TF_NSOURCES": str(len(inputs)), **env}
    return OtbtfCommand(output_key, args, env, eo, out)


def otbtf_settings(spec: ModelSpec, *, margin: int | None = None,
                   efield: int = DEFAULT_EFIELD, model_dir: str = "savedmodel",
                   ) -> dict[str, Any]:
    """What OTBTF's ``TensorflowModelServe`` needs to serve an export (``otbtf.json``).

    One command per output resolution: OTBTF stacks the outputs of one command, so they
    must share a grid. Every source is ``-sourceN.il <key>.vrt``: the key's raster padded
    by the margin (see :func:`padded_size`; :func:`decloud.inference.otbtf.run_otbtf`
    writes these and runs the commands). Models with non-image inputs (the ``dt_*`` days
    of gap filling) cannot be served by OTBTF: their commands are null and ``reason``
    says why.

    Args:
        spec: The model's spec.
        margin: Pixels cropped on each side of the outputs (10 m px); default
            :attr:`ModelSpec.margin`; at least half the receptive field.
        efield: Output patch side OTBTF writes, in 10 m px (a multiple of the size
            multiple).
        model_dir: The SavedModel folder, as the command line should name it (absolute).

    Returns:
        JSON-ready settings, with ``command`` (first output) and ``commands`` (by key).

    Raises:
        MarginTooSmallError: ``margin`` below half the receptive field.
        ExportError: A margin or efield the model cannot take.
    """
    m = check_geometry(spec, margin, efield)
    ordered = sources(spec)
    not_images = [s.key for s in ordered if not is_image(s)]
    reason = (f"inputs {', '.join(not_images)} are not images: OTBTF feeds image sources only"
              if not_images else None)
    reference = ordered[0].resolution if ordered else _GRID
    outputs: list[dict[str, Any]] = []
    for key, out in spec.outputs.items():
        crop = per_pixel(m, out.resolution, "margin")
        eo = per_pixel(efield, out.resolution, "efield")
        rfields = {s.key: rfield(out.resolution, eo, crop, s.resolution) for s in ordered
                   if is_image(s)}
        outputs.append({"key": key, "name": crop_name(key, crop), "crop_px": crop,
                        "efield": eo, "spcscale": out.resolution / reference,
                        "resolution_m": out.resolution, "channels": out.channels,
                        "bands": list(out.bands), "rfields": rfields})
    settings: dict[str, Any] = {
        "model": spec.name,
        "model_dir": model_dir,
        "signature": SERVING_SIGNATURE,
        "fully_convolutional": True,
        "receptive_field_px": spec.receptive_field,
        "size_multiple": spec.size_multiple,
        "margin_px": m,
        "minimum_margin_px": minimum_margin(spec.receptive_field),
        "margin_covers_receptive_field": True,
        "efield_px": efield,
        "input_patch_px": efield + 2 * m,
        "ram_hint_mb": DEFAULT_RAM_HINT_MB,
        "inputs": [{"placeholder": s.key, "source": n, "dtype": "float32",
                    "layout": "NHWC" if is_image(s) else "NC", "channels": s.channels,
                    "resolution_m": s.resolution, "bands": list(s.bands)}
                   for n, s in enumerate(ordered, start=1)],
        "outputs": outputs,
        "servable": reason is None,
        "reason": reason,
        "padding": (f"each -sourceN.il is the key's raster padded with its nodata by {m} px "
                    "(10 m) on the top and left, and on the bottom and right by "
                    f"{m} px plus what makes the output a whole number of fields (plus "
                    "2 px when an input or output is at 20 m); the output then starts at "
                    "the unpadded origin (crop it to the input)"),
    }
    commands: dict[str, str | None] = {}
    for entry in outputs:
        if reason is not None:
            commands[entry["key"]] = None
            continue
        rasters = {s.key: f"{s.key}.vrt" for s in ordered}
        cmd = otbtf_command(settings, entry["key"], rasters, f"{entry['key']}.tif",
                            efield=efield)
        commands[entry["key"]] = cmd.shell()
    settings["command"] = next(iter(commands.values()), None)
    settings["commands"] = commands
    return settings
