"""``--engine otbtf``: run an exported SavedModel through OTBTF's ``TensorflowModelServe``.

Two routes:

* :class:`OtbtfMethod`, the processors' ``--engine otbtf`` (``decloud process
  single-date | multi-temporal | series``): a :class:`~decloud.inference.method.KerasMethod`
  whose :meth:`~OtbtfMethod.prepare` hook runs OTBTF over the engine's grid (one region
  per set of products) on per-key rasters written from decloud's own reads
  (:func:`write_key_rasters`), and whose blocks are read back from OTBTF's output: the
  engine then writes exactly what it writes for the Keras model (composite, quality,
  COGs, STAC item, record). See the class.
* :func:`run_otbtf`, on given rasters (a stack's ``s2.tif``...), described below.

:func:`run_otbtf` gives the outputs the native engine (:mod:`.engine`) gives for the
same model and inputs without a composite: the same extent (the whole input), COG
conventions (int16 reflectance x 10000, nodata -10000, band names), nodata wherever no
time-varying input (S2, S1) has a value, and a completion record ``<out>.json`` written
last.

Steps:

1. **rasters**: every input key gets a VRT (:func:`write_padded_vrt`) selecting its
   bands from the given raster (a band subset of a stack's ``s2.tif``, by index or by
   the band names of the model card, :func:`select_bands`) and padding it with the
   key's nodata value (which the models normalise to 0, as the native engine reads
   past the edges) by the margin, and to a whole number of expression fields
   (:func:`decloud.models.otbtf.padded_size`). OTBTF's ``-sourceN.nodata`` is not
   used: it blanks whole tiles.
2. **commands**: one per output resolution (:func:`decloud.models.otbtf.otbtf_command`),
   run with their output and log captured; a failure is an :class:`InferenceError`
   with the tail of OTB's log.
3. **outputs**: OTBTF's float output starts at the unpadded origin; it is cropped to
   the input, masked from the inputs' nodata, encoded and written as a COG on the grid
   of the input. The grid is decloud's, not OTBTF's: OTBTF places a 20 m output half
   a 10 m pixel (5 m) off, its origin being the first 10 m pixel's centre shifted by
   half a 20 m pixel (:func:`otbtf_origin`), so its georeferencing is replaced, after
   :func:`check_output` has checked it against OTBTF's geometry
   (:func:`otbtf_output_grid`).

Outputs: ``<out>.tif`` for the 10 m output, ``<out>_20m.tif`` for a 20 m output, and
``<out>.json``. The native engine's quality and days layers are not written: they need
the target's cloud mask (the composite), which OTBTF does not see.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window

from decloud.constants import S2_SCALE
from decloud.errors import InferenceError, OutputExistsError
from decloud.grid import Grid, RasterPool
from decloud.inference.engine import EngineOptions, RunRecord, record_path
from decloud.inference.method import BlockResult, KerasMethod
from decloud.inputs import InputProducts, KeyRequest, read_inputs
from decloud.keys import KINDS, KeyKind, encode_s2, parse_key
from decloud.models.otbtf import (
    DEFAULT_EFIELD,
    DEFAULT_RAM_HINT_MB,
    EXECUTABLE,
    OTBTF_FILE,
    OtbtfCommand,
    field_step,
    otbtf_command,
    padded_size,
    serving_efield,
)
from decloud.products.dem import DemPolicy
from decloud.writers import CogWriter, atomic_file, provenance_tags

if TYPE_CHECKING:
    from decloud.models.zoo import ModelSpec

__all__ = [
    "KeyRaster",
    "OtbtfMethod",
    "OtbtfPlan",
    "check_output",
    "command_sources",
    "finish_otbtf",
    "otbtf_origin",
    "otbtf_output_grid",
    "plan_otbtf",
    "read_settings",
    "recorded_environment",
    "require_otbtf",
    "run_otbtf",
    "select_bands",
    "stack_key_rasters",
    "write_key_rasters",
    "write_padded_vrt",
]

#: How to get OTBTF when it is missing.
GET_OTBTF = ("run in decloud's OTBTF image (docker/otbtf, built on mdl4eo/otbtf, see "
             "https://github.com/remicres/otbtf) or install OTBTF and source its otbenv.profile")
#: Keys whose nodata marks an output pixel as nodata (as in the native engine).
_DYNAMIC = (KeyKind.S2, KeyKind.S2_20M, KeyKind.S1)
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32",
               "float64": "Float64"}
#: Lines of OTB's log quoted in an error.
_LOG_TAIL = 5


@dataclass(frozen=True)
class KeyRaster:
    """The raster of one input key: a file and, optionally, which of its bands.

    Attributes:
        path: The raster.
        bands: 1-based band indexes, in the model's channel order; None: the bands
            whose descriptions are the model's band names, or all bands when the file
            has exactly as many as the model takes.
    """

    path: Path
    bands: tuple[int, ...] | None = None


def read_settings(savedmodel_dir: str | Path) -> dict[str, Any]:
    """The export's ``otbtf.json``.

    Raises:
        InferenceError: The file is missing or is not JSON.
    """
    path = Path(savedmodel_dir) / OTBTF_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise InferenceError(f"cannot read the OTBTF settings ({err}): export the model with "
                             "decloud export --format savedmodel", path=path) from err


def select_bands(raster: KeyRaster, names: Sequence[str], channels: int) -> tuple[int, ...]:
    """The 1-based bands of ``raster`` that feed an input of ``channels`` named ``names``.

    Raises:
        InferenceError: Band indexes out of range or of the wrong count, or bands that
            cannot be found by name.
    """
    try:
        with rasterio.open(raster.path) as src:
            count, descriptions = src.count, list(src.descriptions)
    except RasterioError as err:
        raise InferenceError(f"cannot open ({err})", path=raster.path) from err
    if raster.bands is not None:
        bands = tuple(raster.bands)
        if len(bands) != channels or not all(1 <= b <= count for b in bands):
            raise InferenceError(f"bands {list(bands)} do not pick {channels} of the "
                                 f"{count} bands", path=raster.path, field="bands")
        return bands
    if names and all(n in descriptions for n in names):
        return tuple(descriptions.index(n) + 1 for n in names)
    if count == channels:
        return tuple(range(1, count + 1))
    raise InferenceError(f"{count} bands ({descriptions}) for an input of {channels} "
                         f"({list(names)}): name the bands (KeyRaster.bands or band "
                         "descriptions)", path=raster.path, field="bands")


#: The file of each key kind in a stack folder (:mod:`decloud.stack`).
_STACK_FILES = {KeyKind.S2: "s2.tif", KeyKind.S2_20M: "s2_20m.tif", KeyKind.S1: "s1.tif",
                KeyKind.DEM: "dem.tif"}


def stack_key_rasters(settings: Mapping[str, Any], stacks: Mapping[str, str | Path],
                      ) -> dict[str, KeyRaster]:
    """The raster of every input key of an export, from stack folders by acquisition.

    ``s2_<a>`` is ``<stack of a>/s2.tif`` (its bands chosen by the model's band names,
    :func:`select_bands`), ``s1_<a>`` its ``s1.tif``, ``dem`` the ``dem.tif`` of the
    first stack that has one; ``s2_20m_<a>`` needs a 20 m ``s2_20m.tif`` there.

    Args:
        settings: The export's ``otbtf.json``.
        stacks: Stack folder of each acquisition (``{"t": ".../31TCJ_20200101"}``).

    Raises:
        InferenceError: An acquisition without a stack, or a file missing from one.
    """
    out: dict[str, KeyRaster] = {}
    for entry in settings["inputs"]:
        key = entry["placeholder"]
        parsed = parse_key(key)
        name = _STACK_FILES.get(parsed.kind)
        if name is None:
            raise InferenceError(f"input {key} is not read from stacks", field=key)
        if parsed.acquisition is None:
            found = [Path(s) / name for s in stacks.values() if (Path(s) / name).is_file()]
            if not found:
                raise InferenceError(f"no stack has a {name} for {key}", field=key)
            out[key] = KeyRaster(found[0])
            continue
        if parsed.acquisition not in stacks:
            raise InferenceError(f"no stack for acquisition {parsed.acquisition!r} of {key}",
                                 field=key)
        path = Path(stacks[parsed.acquisition]) / name
        if not path.is_file():
            raise InferenceError(f"no {name} for {key}", path=path.parent, field=key)
        out[key] = KeyRaster(path)
    return out


def write_padded_vrt(raster: KeyRaster, bands: Sequence[int], pad: tuple[int, int, int, int],
                     nodata: float, out: Path) -> None:
    """Write a VRT of ``bands`` of a raster, padded by ``(left, top, right, bottom)`` px.

    The padding reads as ``nodata`` (the band's ``NoDataValue``, which GDAL fills where
    no source lies); so do the raster's own nodata pixels, already encoded that way.
    """
    left, top, right, bottom = pad
    with rasterio.open(raster.path) as src:
        width, height, transform = src.width, src.height, src.transform
        crs, dtypes = src.crs, src.dtypes
    root = ET.Element("VRTDataset", rasterXSize=str(width + left + right),
                      rasterYSize=str(height + top + bottom))
    if crs is not None:
        ET.SubElement(root, "SRS").text = crs.to_wkt()
    shifted = transform * Affine.translation(-left, -top)
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in shifted.to_gdal())
    for n, band in enumerate(bands, start=1):
        dtype = _GDAL_TYPES[dtypes[band - 1]]
        node = ET.SubElement(root, "VRTRasterBand", dataType=dtype, band=str(n))
        ET.SubElement(node, "NoDataValue").text = repr(float(nodata))
        source = ET.SubElement(node, "SimpleSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(
            Path(raster.path).resolve())
        ET.SubElement(source, "SourceBand").text = str(band)
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(width),
                      ySize=str(height))
        ET.SubElement(source, "DstRect", xOff=str(left), yOff=str(top), xSize=str(width),
                      ySize=str(height))
    ET.ElementTree(root).write(out, encoding="unicode")


def otbtf_origin(transform: Affine, spcscale: float) -> tuple[float, float]:
    """Upper-left corner OTBTF writes for an output ``spcscale`` times coarser.

    OTBTF keeps the centre of the first reference pixel as the centre of the first
    output pixel, so the corner moves by half the difference of the two pixel sizes:
    5 m to the west and north for 20 m from 10 m. :func:`finish_otbtf` replaces it by
    the reference corner.
    """
    shift = (spcscale - 1) * transform.a / 2
    return transform.c - shift, transform.f + shift


def otbtf_output_grid(sources: Sequence[tuple[Affine, int, int, int]], efield: int,
                      spcscale: float) -> tuple[float, float, int, int]:
    """The grid OTBTF gives its output: ``(west, north, width, height)``.

    OTBTF's ``GenerateOutputInformation``: each source's extent shrunk by its
    ``rfield`` (``floor(r / 2)`` px on the low side, ``r - 1`` in all), the
    intersection of these extents, an origin at the centre of the first *reference*
    pixel moved out by ``floor(efield / 2)`` output pixels, and a size cut to a whole
    number of fields. :func:`finish_otbtf` checks OTBTF's output against it before
    reading it on decloud's grid.

    Args:
        sources: ``(transform, width, height, rfield)`` of each source, source1 first.
        efield: The output's expression field, in output px.
        spcscale: Output pixel size over source1's.

    Raises:
        InferenceError: The output would be smaller than one field (OTBTF refuses it).
    """
    ref = sources[0][0].a
    size = ref * spcscale
    west, east = -math.inf, math.inf
    south, north = -math.inf, math.inf
    for t, width, height, r in sources:
        low, n_x, n_y = r // 2, width - r + 1, height - r + 1
        west, east = max(west, t.c + low * t.a), min(east, t.c + (low + n_x) * t.a)
        north, south = min(north, t.f + low * t.e), max(south, t.f + (low + n_y) * t.e)
    cx = west + ref / 2 - size * (efield // 2)
    cy = north - ref / 2 + size * (efield // 2)
    out = []
    for extent in (east - west, north - south):
        n = math.floor(extent / size) + efield - 1
        if n < efield:
            raise InferenceError(f"OTBTF's output would be {n} px, less than one field "
                                 f"({efield} px): the sources are too small", field="efield")
        out.append(n - n % efield)
    return cx - size / 2, cy + size / 2, out[0], out[1]


@dataclass
class OtbtfPlan:
    """What one OTBTF run does: the grid, padding, fields and commands.

    Attributes:
        settings: The export's ``otbtf.json``.
        grid: The 10 m grid of the (unpadded) input.
        margin: Margin of the export, 10 m px.
        efield: Expression field of the run, 10 m px.
        fields: Fields across and down.
        padded: Padded width and height, 10 m px.
        rasters: The padded VRT of each input key.
        bands: Bands of each input key's raster.
        commands: One per output key.
        outputs: The final COG of each output key.
    """

    settings: dict[str, Any]
    grid: Grid
    margin: int
    efield: int
    fields: tuple[int, int]
    padded: tuple[int, int]
    rasters: dict[str, Path]
    bands: dict[str, tuple[int, ...]]
    commands: dict[str, OtbtfCommand]
    outputs: dict[str, Path]


def _role(resolution: float) -> str:
    """Role of an output in the record: ``reflectance``, ``reflectance_20m``."""
    return "reflectance" if resolution == 10 else f"reflectance_{resolution:g}m"


def _output_path(out: Path, resolution: float) -> Path:
    stem = out.with_suffix("") if out.suffix == ".tif" else out
    return Path(f"{stem}.tif") if resolution == 10 else Path(f"{stem}_{resolution:g}m.tif")


def plan_otbtf(settings: Mapping[str, Any], key_rasters: Mapping[str, KeyRaster | str | Path],
               out: str | Path, workdir: str | Path, *, efield: int = DEFAULT_EFIELD,
               ram_hint_mb: int = DEFAULT_RAM_HINT_MB) -> OtbtfPlan:
    """Check the inputs, write the padded VRTs into ``workdir`` and build the commands.

    Raises:
        InferenceError: A model OTBTF cannot serve, a missing key, bands that cannot be
            chosen, or rasters that are not on one grid (20 m ones on the 10 m grid's
            halved grid).
    """
    if not settings.get("servable"):
        raise InferenceError(f"model {settings.get('model')} cannot be served by OTBTF: "
                             f"{settings.get('reason')}", field="engine")
    workdir = Path(workdir)
    inputs = {i["placeholder"]: i for i in settings["inputs"]}
    missing = sorted(set(inputs) - set(key_rasters))
    if missing:
        raise InferenceError(f"no raster for inputs {missing} of model {settings['model']}",
                             field="inputs")
    rasters = {k: v if isinstance(v, KeyRaster) else KeyRaster(Path(v))
               for k, v in key_rasters.items() if k in inputs}
    first = next(iter(inputs))
    if float(inputs[first]["resolution_m"]) != 10:
        raise InferenceError(f"model {settings['model']} has no 10 m input to set the grid",
                             field="inputs")
    try:
        grid = Grid.from_raster(rasters[first].path)
    except RasterioError as err:
        raise InferenceError(f"cannot open ({err})", path=rasters[first].path) from err
    resolutions = [float(i["resolution_m"]) for i in inputs.values()] + [
        float(o["resolution_m"]) for o in settings["outputs"]]
    step = field_step(int(settings["size_multiple"]), resolutions)
    m = int(settings["margin_px"])
    if max(resolutions) > 10 and (grid.width % 2 or grid.height % 2):
        raise InferenceError(f"{grid.width} x {grid.height} px: 20 m inputs or outputs need "
                             "an even size at 10 m", path=rasters[first].path, field="size")
    e = serving_efield(grid.width, grid.height, efield, step)
    pw, ph, nx, ny = padded_size(grid.width, grid.height, m, e, coarse=max(resolutions) > 10)
    vrts: dict[str, Path] = {}
    bands: dict[str, tuple[int, ...]] = {}
    for key, entry in inputs.items():
        raster = rasters[key]
        ratio = int(float(entry["resolution_m"]) / 10)
        expected = (grid.width // ratio, grid.height // ratio)
        key_grid = Grid.from_raster(raster.path)
        if (key_grid.width, key_grid.height) != expected or not np.allclose(
                (key_grid.transform.c, key_grid.transform.f),
                (grid.transform.c, grid.transform.f)):
            raise InferenceError(f"{key_grid.width} x {key_grid.height} px at "
                                 f"({key_grid.transform.c}, {key_grid.transform.f}); the "
                                 f"grid of {key} is {expected[0]} x {expected[1]} px at "
                                 f"({grid.transform.c}, {grid.transform.f})",
                                 path=raster.path, field=key)
        bands[key] = select_bands(raster, entry.get("bands", []), int(entry["channels"]))
        pad = (m // ratio, m // ratio, (pw - grid.width - m) // ratio,
               (ph - grid.height - m) // ratio)
        vrts[key] = workdir / f"{key}.vrt"
        write_padded_vrt(raster, bands[key], pad, KINDS[parse_key(key).kind].nodata, vrts[key])
    out = Path(out)
    commands: dict[str, OtbtfCommand] = {}
    outputs: dict[str, Path] = {}
    for entry in settings["outputs"]:
        key = entry["key"]
        outputs[key] = _output_path(out, float(entry["resolution_m"]))
        commands[key] = otbtf_command(settings, key, {k: str(v) for k, v in vrts.items()},
                                      str(workdir / f"{key}_otbtf.tif"), efield=e,
                                      fields=(nx, ny), ram_hint_mb=ram_hint_mb)
    return OtbtfPlan(dict(settings), grid, m, e, (nx, ny), (pw, ph), vrts, bands, commands,
                     outputs)


def _observed(plan: OtbtfPlan, key_rasters: Mapping[str, KeyRaster], resolution: float
              ) -> np.ndarray:
    """Pixels of an output at ``resolution`` where a time-varying input has a value."""
    ratio = int(resolution / 10)
    shape = (plan.grid.height // ratio, plan.grid.width // ratio)
    seen = np.zeros(shape, dtype=bool)
    for key, bands in plan.bands.items():
        kind = parse_key(key).kind
        if kind not in _DYNAMIC:
            continue
        with rasterio.open(key_rasters[key].path) as src:
            data = src.read(list(bands))
        valid = (data != KINDS[kind].nodata).any(axis=0)
        if valid.shape[0] > shape[0]:  # finer input: any of the pixels in an output pixel
            f = valid.shape[0] // shape[0]
            valid = valid.reshape(shape[0], f, shape[1], f).any(axis=(1, 3))
        elif valid.shape[0] < shape[0]:
            f = shape[0] // valid.shape[0]
            valid = np.repeat(np.repeat(valid, f, axis=0), f, axis=1)
        seen |= valid
    return seen


def finish_otbtf(plan: OtbtfPlan, key_rasters: Mapping[str, KeyRaster], *,
                 overwrite: bool = False) -> dict[str, int]:
    """Crop, mask, encode and georeference OTBTF's outputs into the final COGs.

    Returns:
        Pixel counts of the 10 m grid: ``valid`` and ``nodata``.

    Raises:
        InferenceError: An OTBTF output missing or smaller than the input.
    """
    tags = provenance_tags([str(r.path) for r in key_rasters.values()],
                           method=f"otbtf {plan.settings['model']}")
    counts: dict[str, int] = {}
    for entry in plan.settings["outputs"]:
        key, res = entry["key"], float(entry["resolution_m"])
        ratio = int(res / 10)
        width, height = plan.grid.width // ratio, plan.grid.height // ratio
        produced = plan.commands[key].output
        check_output(plan.commands[key], width, height)
        with rasterio.open(produced) as src:
            data = src.read(window=((0, height), (0, width))).astype(np.float32)
        seen = _observed(plan, key_rasters, res)
        reflectance = data / np.float32(S2_SCALE)
        reflectance[:, ~seen] = np.nan
        t = plan.grid.transform
        # decloud's grid: the input's corner, whatever OTBTF wrote (5 m off at 20 m).
        grid = Grid(plan.grid.crs, Affine(t.a * ratio, 0, t.c, 0, t.e * ratio, t.f), width,
                    height)
        with CogWriter(plan.outputs[key], grid, int(entry["channels"]), "int16",
                       KINDS[KeyKind.S2].nodata, band_names=list(entry["bands"]) or None,
                       tags=tags, overwrite=overwrite, encoder=encode_s2) as writer:
            writer.write(reflectance)
        if ratio == 1:
            counts = {"valid": int(seen.sum()), "nodata": int(seen.size - seen.sum())}
    return counts


def command_sources(command: OtbtfCommand) -> list[tuple[str, int]]:
    """The ``(-sourceN.il, -sourceN.rfieldx)`` of a command, in source order."""
    args = command.args
    found: list[tuple[str, int]] = []
    n = 1
    while f"-source{n}.il" in args:
        found.append((args[args.index(f"-source{n}.il") + 1],
                      int(args[args.index(f"-source{n}.rfieldx") + 1])))
        n += 1
    return found


def check_output(command: OtbtfCommand, width: int, height: int) -> None:
    """Check that OTBTF's output lies where its geometry puts it and covers the input.

    Its first pixel is then the first pixel of the unpadded input (whatever OTBTF's
    georeferencing says, 5 m off at 20 m), and its first ``width`` x ``height`` pixels
    are the output on decloud's grid.

    Raises:
        InferenceError: The output is missing, smaller than the input, or not where
            OTBTF's geometry (:func:`otbtf_output_grid`) puts it (another OTBTF
            version's geometry: decloud would read it off by some pixels).
    """
    sources = []
    for path, rfield in command_sources(command):
        with rasterio.open(path) as src:
            sources.append((src.transform, src.width, src.height, rfield))
    args = command.args
    scale = float(args[args.index("-output.spcscale") + 1]) \
        if "-output.spcscale" in args else 1.0
    west, north, _, _ = otbtf_output_grid(sources, command.efield, scale)
    produced = command.output
    try:
        with rasterio.open(produced) as src:
            t, w, h = src.transform, src.width, src.height
    except RasterioError as err:
        raise InferenceError(f"no OTBTF output ({err})", path=produced) from err
    if w < width or h < height:
        raise InferenceError(f"{w} x {h} px, the input needs {width} x {height}",
                             path=produced, field=command.key)
    if not np.allclose((t.c, t.f), (west, north), rtol=0, atol=abs(t.a) * 1e-3):
        raise InferenceError(f"OTBTF's output starts at ({t.c}, {t.f}), its geometry puts it "
                             f"at ({west}, {north}): an OTBTF version decloud does not know",
                             path=produced, field=command.key)


#: Prefixes of the variables that change what OTB and GDAL compute (threads, RAM,
#: caches, drivers): the caller's are passed on, so the record keeps them.
_RECORDED_PREFIXES = ("OTB_", "ITK_", "GDAL_")


def _environment(command: OtbtfCommand) -> dict[str, str]:
    """A command's environment: the caller's, with decloud's own settings over it."""
    return {**os.environ, **command.env}


def recorded_environment(commands: Sequence[OtbtfCommand]) -> dict[str, str]:
    """The ``OTB_``/``ITK_``/``GDAL_`` variables the commands ran with (for the record)."""
    out: dict[str, str] = {}
    for command in commands:
        out.update((k, v) for k, v in _environment(command).items()
                   if k.startswith(_RECORDED_PREFIXES))
    return dict(sorted(out.items()))


def _run(command: OtbtfCommand, workdir: Path, timeout: float | None) -> float:
    """Run one command, its output captured; seconds taken."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command.args, env=_environment(command), cwd=workdir,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise InferenceError(f"{EXECUTABLE} ran past {timeout} s",
                             path=command.output) from err
    except OSError as err:
        raise InferenceError(f"{EXECUTABLE} cannot start ({err})", path=command.output) from err
    if done.returncode != 0:
        lines = [x.strip() for x in (done.stdout + "\n" + done.stderr).splitlines() if x.strip()]
        tail = " | ".join(lines[-_LOG_TAIL:]) or "no output"
        raise InferenceError(f"{EXECUTABLE} failed with status {done.returncode}: {tail}",
                             path=command.output, field=command.key)
    return time.perf_counter() - started


def run_otbtf(savedmodel_dir: str | Path, key_rasters: Mapping[str, KeyRaster | str | Path],
              out: str | Path, *, efield: int = DEFAULT_EFIELD,
              ram_hint_mb: int = DEFAULT_RAM_HINT_MB, overwrite: bool = False,
              timeout: float | None = None) -> RunRecord:
    """Serve a SavedModel export with OTBTF over whole rasters; write COGs and a record.

    Args:
        savedmodel_dir: A folder from :func:`decloud.models.export.export_savedmodel`.
        key_rasters: The raster of each input key (``s2_t``, ``s1_t``, ``dem`` ...), on
            one grid (20 m keys on the halved grid).
        out: ``<out>.tif`` (10 m output), ``<out>_20m.tif`` and ``<out>.json``.
        efield: Largest expression field, 10 m px (cut to the input).
        ram_hint_mb: ``OTB_MAX_RAM_HINT`` of the commands.
        overwrite: Replace existing outputs.
        timeout: Seconds each command may run; None: no limit.

    Returns:
        The completion record, also written to ``<out>.json``.

    Raises:
        InferenceError: ``otbcli_TensorflowModelServe`` is not on PATH (the message
            says how to get it), the inputs do not fit the model, or OTBTF failed
            (the message ends with its log's last lines).
        OutputExistsError: An output exists and ``overwrite`` is not set.
    """
    require_otbtf()
    started = time.perf_counter()
    settings = read_settings(savedmodel_dir)
    # OTBTF resolves -model.dir from its working directory, a temporary one here.
    settings["model_dir"] = str(Path(savedmodel_dir).resolve())
    rasters = {k: v if isinstance(v, KeyRaster) else KeyRaster(Path(v))
               for k, v in key_rasters.items()}
    record_file = record_path(out)
    with tempfile.TemporaryDirectory(prefix="decloud-otbtf-") as tmp:
        plan = plan_otbtf(settings, rasters, out, tmp, efield=efield, ram_hint_mb=ram_hint_mb)
        if not overwrite:
            for path in [*plan.outputs.values(), record_file]:
                if path.exists():
                    raise OutputExistsError("exists already (pass overwrite to replace it)",
                                            path=path)
        # A stale record must not vouch for the outputs being rewritten.
        record_file.unlink(missing_ok=True)
        otb_s = sum(_run(c, Path(tmp), timeout) for c in plan.commands.values())
        counts = finish_otbtf(plan, rasters, overwrite=overwrite)
    grid = plan.grid
    wall = time.perf_counter() - started
    runs = plan.fields[0] * plan.fields[1]
    record = RunRecord(
        outputs={_role(float(o["resolution_m"])): str(plan.outputs[o["key"]])
                 for o in settings["outputs"]},
        method={"engine": "otbtf", "model": settings["model"],
                "model_dir": settings["model_dir"],
                "commands": {k: c.shell() for k, c in plan.commands.items()}},
        inputs={k: {"path": str(r.path), "bands": list(plan.bands.get(k, ()))}
                for k, r in rasters.items()},
        parameters={"margin": plan.margin, "efield": plan.efield,
                    "padded": list(plan.padded), "ram_hint_mb": ram_hint_mb},
        grid={"crs": str(grid.crs), "transform": list(grid.transform)[:6],
              "width": grid.width, "height": grid.height},
        timing={"wall_s": wall, "otbtf_s": otb_s},
        pixels=counts,
        blocks={"total": runs, "skipped": 0, "method_calls": runs * len(plan.commands)},
        finished=datetime.now(UTC).isoformat(),
        extra={"otbtf": {"environment": recorded_environment(list(plan.commands.values()))}},
    )
    with atomic_file(record_file, overwrite=True) as tmp_record:
        tmp_record.write_text(record.to_json())
    return record


def require_otbtf() -> str:
    """The path of ``otbcli_TensorflowModelServe``.

    Raises:
        InferenceError: It is not on PATH; the message says how to get it.
    """
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise InferenceError(f"{EXECUTABLE} is not on PATH: {GET_OTBTF}", field="engine")
    return found


#: Rows read per stripe when writing the per-key rasters (bounds the memory).
_STRIPE = 512


def write_key_rasters(keys: Sequence[KeyRequest], products: InputProducts, grid: Grid,
                      window: Window, folder: Path, *,
                      dem_policy: DemPolicy | str = DemPolicy.PARTIAL) -> dict[str, Path]:
    """Write the encoded arrays of ``keys`` on a window of a grid, one GeoTIFF per key.

    The arrays are :func:`decloud.inputs.read_inputs`' (the native engine's own reads:
    bands, resolutions, nodata encodings), so OTBTF sees what the Keras model sees; the
    window may extend past the grid (read as each key's nodata). Read in stripes of
    :data:`_STRIPE` rows.

    Args:
        keys: The model's input keys.
        products: The products they are read from.
        grid: The 10 m grid.
        window: The (padded) window to write, 10 m px; even offsets and sizes when a
            key is at 20 m.
        folder: Receives ``<key>.tif``.
        dem_policy: Passed to :func:`~decloud.inputs.read_inputs`.

    Returns:
        The file of each key.
    """
    folder.mkdir(parents=True, exist_ok=True)
    col, row = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    paths = {key.name: folder / f"{key.name}.tif" for key in keys}
    outputs: dict[str, Any] = {}
    pool = RasterPool()
    try:
        with contextlib.ExitStack() as stack:
            for top in range(0, height, _STRIPE):
                rows = min(_STRIPE, height - top)
                arrays = read_inputs(keys, products, grid, Window(col, row + top, width, rows),
                                     dem_policy=dem_policy, pool=pool)
                for key in keys:
                    data = arrays[key.name]
                    ratio = round(key.resolution / abs(grid.transform.a))
                    if key.name not in outputs:
                        transform = (grid.transform * Affine.translation(col, row)
                                     * Affine.scale(ratio))
                        outputs[key.name] = stack.enter_context(rasterio.open(
                            paths[key.name], "w", driver="GTiff", width=width // ratio,
                            height=height // ratio, count=data.shape[-1], dtype=data.dtype,
                            crs=grid.crs, transform=transform, tiled=True, blockxsize=256,
                            blockysize=256, BIGTIFF="IF_SAFER"))
                    outputs[key.name].write(np.moveaxis(data, -1, 0), window=Window(
                        0, top // ratio, width // ratio, data.shape[0]))
    finally:
        pool.close()
    return paths


@dataclass(frozen=True)
class _Served:
    """OTBTF's output over one region of the grid (10 m px)."""

    path: Path
    col: int
    row: int
    width: int
    height: int


def _window_key(window: Window) -> tuple[int, int, int, int]:
    return (int(window.col_off), int(window.row_off), int(window.width), int(window.height))


class OtbtfMethod(KerasMethod):
    """A zoo model served by OTBTF's ``TensorflowModelServe``: the ``--engine otbtf`` method.

    The streaming engine (:func:`decloud.inference.engine.run`) calls :meth:`prepare`
    before it opens any output: the model is exported as a SavedModel (unless one is
    given), every distinct set of products (one for a single date; one per neighbour
    choice of the multi-temporal processor) gets its region of the grid (the bounding
    box of its blocks), whose inputs are written as per-key GeoTIFFs padded by the
    export's margin (:func:`write_key_rasters`: real pixels inside the grid, nodata
    past it, as the native engine's halo), and OTBTF serves the method's 10 m output
    over it with the geometry of :func:`decloud.models.otbtf.otbtf_command` (large
    fields, tiled writer, RAM hint). The engine then streams its blocks as for any
    method: :meth:`__call__` reads OTBTF's output on each block (``windowed``), and
    the engine masks nodata from its own reads, composites with the target's mask,
    encodes and writes the same COGs, quality layer, STAC item and record as the
    native engine; the record's ``extra.otbtf`` holds the commands run.

    Args:
        model: The Keras model (exported when ``savedmodel`` is None: TensorFlow
            backend).
        spec: Its spec.
        savedmodel: An existing export of the same model
            (:func:`decloud.models.export.export_savedmodel`), or None.
        efield: Largest expression field, 10 m px (cut to each region).
        ram_hint_mb: ``OTB_MAX_RAM_HINT`` of the commands.
        workdir: Parent of the temporary folders (per-key rasters, OTBTF's outputs:
            about the inputs' size in float32 plus the output); the system's default
            when None.
        timeout: Seconds each command may run; None: no limit.
        output_key, checksum, card_checksum, source: As for :class:`KerasMethod`.
    """

    #: The engine passes each block's windows to :meth:`__call__`.
    windowed = True

    def __init__(self, model: Any, spec: ModelSpec, *, savedmodel: str | Path | None = None,
                 efield: int = DEFAULT_EFIELD, ram_hint_mb: int = DEFAULT_RAM_HINT_MB,
                 workdir: str | Path | None = None, timeout: float | None = None,
                 output_key: str | None = None, checksum: str | None = None,
                 card_checksum: str | None = None, source: str | None = None) -> None:
        super().__init__(model, spec, output_key=output_key, checksum=checksum,
                         card_checksum=card_checksum, source=source)
        self.savedmodel = None if savedmodel is None else Path(savedmodel).resolve()
        self.efield = efield
        self.ram_hint_mb = ram_hint_mb
        self.workdir = None if workdir is None else Path(workdir)
        self.timeout = timeout
        self._export_dir: tempfile.TemporaryDirectory[str] | None = None
        self._run_dir: tempfile.TemporaryDirectory[str] | None = None
        self._settings: dict[str, Any] | None = None
        self._served: dict[tuple[int, int, int, int], _Served] = {}

    @classmethod
    def from_method(cls, method: KerasMethod, **options: Any) -> OtbtfMethod:
        """The same model, checksums and output, served by OTBTF (``options``: see class)."""
        return cls(method.model, method.spec, output_key=method.output_key,
                   checksum=method.checksum, card_checksum=method.card_checksum,
                   source=method.source, **options)

    def describe(self) -> dict[str, Any]:
        """The Keras method's description, with ``engine: otbtf`` and the export used."""
        return {**super().describe(), "engine": "otbtf",
                "savedmodel": None if self.savedmodel is None else str(self.savedmodel)}

    def settings(self) -> dict[str, Any]:
        """The export's ``otbtf.json``, its ``model_dir`` absolute.

        Without a given SavedModel, the model is first exported into a temporary folder.

        Raises:
            InferenceError: The export is of another model, or OTBTF cannot serve it.
        """
        if self._settings is not None:
            return self._settings
        folder = self.savedmodel
        if folder is None:
            from decloud.models.export import export_savedmodel  # TensorFlow

            self._export_dir = tempfile.TemporaryDirectory(prefix="decloud-savedmodel-",
                                                           dir=self.workdir)
            folder = export_savedmodel(self.model, self.spec,
                                       Path(self._export_dir.name) / "savedmodel",
                                       efield=self.efield)
        settings = read_settings(folder)
        settings["model_dir"] = str(Path(folder).resolve())
        if settings.get("model") != self.spec.name:
            raise InferenceError(f"the SavedModel is an export of {settings.get('model')!r}, "
                                 f"the model is {self.spec.name!r}", path=folder,
                                 field="savedmodel")
        if not settings.get("servable"):
            raise InferenceError(f"model {self.spec.name} cannot be served by OTBTF: "
                                 f"{settings.get('reason')}", field="engine")
        self._settings = settings
        return settings

    def prepare(self, grid: Grid, blocks: Sequence[tuple[Window, InputProducts]],
                options: EngineOptions) -> dict[str, Any]:
        """Run OTBTF over the region of every distinct set of products.

        Args:
            grid: The engine's grid.
            blocks: Each core block and its products.
            options: The engine's options (``dem_policy``).

        Returns:
            ``{"otbtf": {...}}`` for the record's ``extra``: the SavedModel, each
            command run (as a shell line), the ``OTB_``/``ITK_``/``GDAL_`` variables
            they ran with (``environment``: the caller's are passed on) and the
            seconds OTBTF took.

        Raises:
            InferenceError: OTBTF is missing or failed, or its output is not where
                its geometry puts it.
        """
        require_otbtf()
        settings = self.settings()
        self.close_run()
        self._run_dir = tempfile.TemporaryDirectory(prefix="decloud-otbtf-", dir=self.workdir)
        root = Path(self._run_dir.name)
        groups: dict[int, tuple[InputProducts, list[Window]]] = {}
        for core, products in blocks:
            groups.setdefault(id(products), (products, []))[1].append(core)
        commands: list[str] = []
        run: list[OtbtfCommand] = []
        seconds = 0.0
        for n, (products, cores) in enumerate(groups.values()):
            col = min(int(c.col_off) for c in cores)
            row = min(int(c.row_off) for c in cores)
            width = max(int(c.col_off + c.width) for c in cores) - col
            height = max(int(c.row_off + c.height) for c in cores) - row
            served, command, took = self._serve(settings, products, grid, col, row, width,
                                                height, root / f"region{n}", options)
            commands.append(command.shell())
            run.append(command)
            seconds += took
            for core in cores:
                self._served[_window_key(core)] = served
        return {"otbtf": {"savedmodel": settings["model_dir"], "commands": commands,
                          "environment": recorded_environment(run),
                          "otbtf_s": seconds, "regions": len(groups)}}

    def _serve(self, settings: Mapping[str, Any], products: InputProducts, grid: Grid,
               col: int, row: int, width: int, height: int, folder: Path,
               options: EngineOptions) -> tuple[_Served, OtbtfCommand, float]:
        resolutions = [float(i["resolution_m"]) for i in settings["inputs"]] + [
            float(o["resolution_m"]) for o in settings["outputs"]]
        step = field_step(int(settings["size_multiple"]), resolutions)
        m = int(settings["margin_px"])
        e = serving_efield(width, height, self.efield, step)
        pw, ph, nx, ny = padded_size(width, height, m, e, coarse=max(resolutions) > 10)
        rasters = write_key_rasters(self.input_keys, products, grid,
                                    Window(col - m, row - m, pw, ph), folder,
                                    dem_policy=options.dem_policy)
        command = otbtf_command(settings, self.output_key,
                                {k: str(v) for k, v in rasters.items()},
                                str(folder / f"{self.output_key}_otbtf.tif"), efield=e,
                                fields=(nx, ny), ram_hint_mb=self.ram_hint_mb)
        took = _run(command, folder, self.timeout)
        check_output(command, width, height)
        return _Served(Path(command.output), col, row, width, height), command, took

    def __call__(self, inputs: Mapping[str, np.ndarray],
                 windows: Sequence[tuple[Window, Window]] | None = None) -> BlockResult:
        """OTBTF's output on a batch of padded blocks (NaN where it has none).

        Raises:
            InferenceError: Called without the blocks' windows, or on a block
                :meth:`prepare` did not serve.
        """
        if windows is None:
            raise InferenceError("the OTBTF method reads OTBTF's output on the engine's "
                                 "blocks: run it with decloud.inference.engine.run",
                                 field="engine")
        channels = len(self.output_bands)
        batch = []
        for core, padded in windows:
            served = self._served.get(_window_key(core))
            if served is None:
                raise InferenceError(f"block {_window_key(core)} was not served by OTBTF",
                                     field="engine")
            h, w = int(padded.height), int(padded.width)
            out = np.full((h, w, channels), np.nan, dtype=np.float32)
            # The padded block's overlap with the served region (its core at least).
            c0 = max(int(padded.col_off), served.col)
            r0 = max(int(padded.row_off), served.row)
            c1 = min(int(padded.col_off) + w, served.col + served.width)
            r1 = min(int(padded.row_off) + h, served.row + served.height)
            with rasterio.open(served.path) as src:
                data = src.read(window=Window(c0 - served.col, r0 - served.row, c1 - c0,
                                              r1 - r0)).astype(np.float32)
            out[r0 - int(padded.row_off):r1 - int(padded.row_off),
                c0 - int(padded.col_off):c1 - int(padded.col_off)] = np.moveaxis(data, 0, -1)
            batch.append(out)
        return BlockResult(np.stack(batch))

    def close_run(self) -> None:
        """Remove the last run's per-key rasters and OTBTF outputs."""
        self._served = {}
        if self._run_dir is not None:
            self._run_dir.cleanup()
            self._run_dir = None

    def close(self) -> None:
        """Remove the temporary files (the last run's and an exported SavedModel)."""
        self.close_run()
        if self._export_dir is not None:
            self._export_dir.cleanup()
            self._export_dir = None
            self._settings = None
