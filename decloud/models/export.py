"""Exports of zoo models: a TF SavedModel servable by OTBTF, ONNX, and agreement checks.

The ``.keras`` file stays the canonical artifact; the exports are for serving:

* :func:`export_savedmodel` writes a TensorFlow SavedModel for OTBTF's
  ``TensorflowModelServe`` (fully convolutional, inputs named by the dataset keys,
  float32 NHWC), with, for each output, a *cropped* copy ``<key>_crop<c>`` that drops
  the border of the patch where the output still depends on the zero padding. Next
  to ``saved_model.pb`` it writes ``otbtf.json``: the margins, input names, dtypes and
  the exact ``otbcli_TensorflowModelServe`` command line.
* :func:`export_onnx` writes an ONNX graph with dynamic batch, height and width.
* :func:`check_agreement` runs the Keras model and the exports on the same random
  raw inputs and compares every output.

Geometry of OTBTF serving (``-model.fullyconv on``), in pixels of the models' 10 m grid:

* ``m`` (margin): pixels dropped on each side of every output patch. A pixel of the
  output depends on ``receptive_field`` input pixels, so ``m >= receptive_field / 2``
  keeps only pixels whose whole receptive field lies inside the patch; it is rounded up
  to a multiple of :attr:`ModelSpec.size_multiple` so that patches stay valid sizes.
* ``efield`` (expression field): the side of the output patch OTBTF writes, a multiple
  of the size multiple (default 256).
* OTBTF's per-source ``rfield`` is the side of the input patch it extracts: the model
  receives ``efield + 2m`` pixels, returns as many, and the ``_crop<m>`` output is the
  central ``efield`` pixels. For a 20 m source the patch is ``(efield + 2m) / 2``
  pixels of 20 m.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from decloud.constants import DEM_NODATA, S1_NODATA, S2_NODATA, S2_SCALE
from decloud.errors import ExportError, ModelInputSizeError, OutputWriteError
from decloud.keys import KeyKind, parse_key
from decloud.models.zoo import InputSpec, ModelSpec
from decloud.writers import atomic_dir, atomic_file

__all__ = [
    "DEFAULT_EFIELD",
    "OTBTF_FILE",
    "SERVE_ENDPOINT",
    "check_agreement",
    "crop_name",
    "default_margin",
    "export_onnx",
    "export_savedmodel",
    "load_for_export",
    "otbtf_settings",
]

#: Default OTBTF expression field (output patch side), in 10 m pixels.
DEFAULT_EFIELD = 256
#: Serving settings written next to ``saved_model.pb``.
OTBTF_FILE = "otbtf.json"
#: Endpoint of the SavedModel (also aliased as ``serving_default``, which OTBTF reads).
SERVE_ENDPOINT = "serve"
_SERVING_DEFAULT = "serving_default"
#: Pixel size of the grid the models work on, metres.
_GRID = 10.0
_CROP = re.compile(r"^(?P<key>.+)_crop(?P<crop>\d+)$")


def _module(name: str, purpose: str) -> Any:
    """Import an optional dependency, or say which one is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ExportError(f"{purpose} needs the {name!r} package ({err})") from err


def _tensorflow(purpose: str) -> Any:
    """TensorFlow, once Keras is known to run on it (exports trace TF functions)."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ExportError(f"{purpose} needs Keras' TensorFlow backend; this process runs "
                          f"{backend!r} (set KERAS_BACKEND=tensorflow before importing keras)",
                          field="KERAS_BACKEND")
    return _module("tensorflow", purpose)


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def default_margin(spec: ModelSpec) -> int:
    """The model's own margin, :attr:`ModelSpec.margin` (10 m px).

    Half the receptive field, rounded up to a multiple of the size multiple; kept
    here for callers of the exporter, the spec is where it is defined.
    """
    return spec.margin


def crop_name(key: str, crop: int) -> str:
    """Name of the cropped copy of an output (``crop`` in that output's pixels)."""
    return f"{key}_crop{crop}"


def _is_image(spec: InputSpec) -> bool:
    return spec.resolution > 0  # dt_* (days) inputs have no pixels


def _per_pixel(value: int, resolution: float, what: str) -> int:
    """A length of ``value`` 10 m pixels in pixels of ``resolution``; must be whole."""
    ratio = resolution / _GRID
    if value % ratio:
        raise ExportError(f"{what} of {value} px at 10 m is not a whole number of "
                          f"{resolution:g} m pixels", field=what)
    return int(value / ratio)


def _check_geometry(spec: ModelSpec, margin: int | None, efield: int) -> int:
    """The margin to use, after checking margin and efield against the model's sizes.

    The margin and the crops are the spec's (:attr:`ModelSpec.margin`,
    :meth:`ModelSpec.crops`); a margin or efield the model cannot take becomes an
    :class:`ExportError` naming the option.
    """
    m = spec.margin if margin is None else margin
    k = spec.size_multiple
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
        if _is_image(s):
            _per_pixel(m, s.resolution, "margin")
            _per_pixel(efield, s.resolution, "efield")
    return m


def _input_signature(model: keras.Model, spec: ModelSpec, tf: Any) -> dict[str, Any]:
    """One float32 ``tf.TensorSpec`` per dataset key, spatial dims left free."""
    model_inputs = model.input if isinstance(model.input, Mapping) else {}
    model_outputs = model.output if isinstance(model.output, Mapping) else {}
    if set(model_inputs) != set(spec.inputs) or set(model_outputs) != set(spec.outputs):
        raise ExportError(f"the model takes {sorted(model_inputs)} and gives "
                          f"{sorted(model_outputs)}, its spec says {sorted(spec.inputs)} and "
                          f"{sorted(spec.outputs)}", field="spec")
    signature = {}
    for key, s in spec.inputs.items():
        shape = tuple(model_inputs[key].shape)
        if _is_image(s) and (len(shape) != 4 or shape[1:3] != (None, None)
                             or shape[3] != s.channels):
            raise ExportError(f"input {key} has shape {shape}, expected (None, None, None, "
                              f"{s.channels}): the model is not fully convolutional",
                              field=key)
        signature[key] = tf.TensorSpec((None, *shape[1:]), tf.float32, name=key)
    return signature


def _crops(spec: ModelSpec, margin: int) -> dict[str, int]:
    """Crop of each output, in its own pixels (:meth:`ModelSpec.crops`)."""
    return spec.crops(margin)


def _sources(spec: ModelSpec) -> list[InputSpec]:
    """Inputs in OTBTF source order: 10 m first (source1 sets the output grid), DEM last."""
    return sorted(spec.inputs.values(), key=lambda s: (s.resolution != _GRID, s.key == "dem"))


def _rfield(out: InputSpec, efield_out: int, crop_out: int, source: InputSpec) -> int:
    """OTBTF ``rfield`` of a source so that the model receives ``efield + 2 crop`` output px.

    OTBTF (``TensorflowMultisourceModelFilter::GenerateInputRequestedRegion``) maps an
    output tile of ``efield`` px onto each source (``efield * ratio`` source px, ``ratio``
    being the output over the source spacing) and pads it by ``rfield - int(1 + (efield
    - 1) * ratio)`` px; solved here for a padded patch of ``(efield + 2 crop) * ratio``
    px. For a source at the output's resolution this is ``efield + 2 crop``; a 20 m source
    of a 10 m output gets half of it.
    """
    ratio = out.resolution / source.resolution
    patch = (efield_out + 2 * crop_out) * ratio
    region = efield_out * ratio
    return int(patch - region + math.floor(1 + (efield_out - 1) * ratio))


def otbtf_settings(spec: ModelSpec, *, margin: int | None = None,
                   efield: int = DEFAULT_EFIELD, model_dir: str = "savedmodel",
                   ) -> dict[str, Any]:
    """What OTBTF's ``TensorflowModelServe`` needs to serve an export (``otbtf.json``).

    One command per output resolution: OTBTF stacks the outputs of one command, so they
    must share a grid. Every source gets ``-sourceN.il <key>.tif`` (replace by the raster
    of that acquisition), its placeholder (the dataset key) and its ``rfield``. Models
    with non-image inputs (the ``dt_*`` days of gap filling) cannot be served by OTBTF:
    their ``command`` is null and ``reason`` says why.

    Args:
        spec: The model's spec.
        margin: Pixels cropped on each side of the outputs (10 m px); default
            :func:`default_margin`.
        efield: Output patch side OTBTF writes, in 10 m px (a multiple of the size
            multiple).
        model_dir: The SavedModel folder, as the command line should name it.

    Returns:
        JSON-ready settings, with ``command`` (first output) and ``commands`` (by key).
    """
    m = _check_geometry(spec, margin, efield)
    sources = _sources(spec)
    not_images = [s.key for s in sources if not _is_image(s)]
    reason = (f"inputs {', '.join(not_images)} are not images: OTBTF feeds image sources only"
              if not_images else None)
    reference = sources[0].resolution if sources else _GRID
    outputs: list[dict[str, Any]] = []
    commands: dict[str, str | None] = {}
    for key, out in spec.outputs.items():
        crop = _per_pixel(m, out.resolution, "margin")
        eo = _per_pixel(efield, out.resolution, "efield")
        scale = out.resolution / reference
        rfields = {s.key: _rfield(out, eo, crop, s) for s in sources
                   if _is_image(s)}
        entry = {"key": key, "name": crop_name(key, crop), "crop_px": crop, "efield": eo,
                 "spcscale": scale, "resolution_m": out.resolution,
                 "channels": out.channels, "bands": list(out.bands), "rfields": rfields}
        outputs.append(entry)
        if reason is not None:
            commands[key] = None
            continue
        args = ["otbcli_TensorflowModelServe"]
        for n, s in enumerate(sources, start=1):
            args += [f"-source{n}.il", f"{s.key}.tif", f"-source{n}.rfieldx", str(rfields[s.key]),
                     f"-source{n}.rfieldy", str(rfields[s.key]),
                     f"-source{n}.placeholder", s.key]
        args += ["-model.dir", model_dir, "-model.fullyconv", "on",
                 "-output.names", crop_name(key, crop),
                 "-output.efieldx", str(eo), "-output.efieldy", str(eo)]
        if scale != 1:
            args += ["-output.spcscale", f"{scale:g}"]
        # Tiles aligned on the expression field: one model run per tile.
        args += ["-optim.tilesizex", str(eo), "-optim.tilesizey", str(eo),
                 "-out", f"{key}.tif", "float"]
        env = f"OTB_TF_NSOURCES={len(sources)} " if len(sources) > 1 else ""
        commands[key] = env + shlex.join(args)
    first = next(iter(commands.values()), None)
    return {
        "model": spec.name,
        "model_dir": model_dir,
        "signature": _SERVING_DEFAULT,
        "fully_convolutional": True,
        "receptive_field_px": spec.receptive_field,
        "size_multiple": spec.size_multiple,
        "margin_px": m,
        "margin_covers_receptive_field": 2 * m + 1 >= spec.receptive_field,
        "efield_px": efield,
        "input_patch_px": efield + 2 * m,
        "inputs": [{"placeholder": s.key, "source": n, "dtype": "float32",
                    "layout": "NHWC" if _is_image(s) else "NC", "channels": s.channels,
                    "resolution_m": s.resolution, "bands": list(s.bands)}
                   for n, s in enumerate(sources, start=1)],
        "outputs": outputs,
        "servable": reason is None,
        "reason": reason,
        "command": first,
        "commands": commands,
    }


def export_savedmodel(model: keras.Model, spec: ModelSpec, out_dir: str | Path, *,
                      margin: int | None = None, efield: int = DEFAULT_EFIELD,
                      overwrite: bool = False) -> Path:
    """Write a TF SavedModel servable by OTBTF's ``TensorflowModelServe``.

    The ``serve`` endpoint (aliased ``serving_default``, the signature OTBTF reads) takes
    the dataset keys (``s2_t``, ``s1_t``, ``dem``...) as float32 NHWC tensors of any
    height and width (multiples of the size multiple) and returns every output key,
    plus ``<key>_crop<c>``: the same output without ``c`` pixels on each side (``c`` is
    ``margin`` in that output's pixels: half of it for 20 m outputs). OTBTF feeds
    ``efield + 2 margin`` pixel patches and writes the central ``efield`` pixels of the
    cropped output: every written pixel has its whole receptive field inside the patch,
    so tiles join without seams. ``otbtf.json`` (:func:`otbtf_settings`) goes next to
    ``saved_model.pb``.

    The folder is written under a temporary name next to ``out_dir`` and renamed once
    complete.

    Args:
        model: The Keras model (TensorFlow backend).
        spec: Its spec (inputs, outputs, receptive field, size multiple).
        out_dir: The SavedModel folder to create.
        margin: Pixels cropped on each side (10 m px), a multiple of the size multiple;
            default half the receptive field rounded up (:func:`default_margin`).
        efield: Output patch side for the OTBTF command line (10 m px).
        overwrite: Replace an existing ``out_dir``.

    Returns:
        ``out_dir``.

    Raises:
        ExportError: Not the TensorFlow backend, a model that disagrees with its spec,
            or a margin/efield that is not a multiple of the size multiple.
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is not set.
        OutputWriteError: Writing failed (full disk: "no space left on device"); no
            partial folder is left.
    """
    tf = _tensorflow("the SavedModel export")
    out_dir = Path(out_dir)
    m = _check_geometry(spec, margin, efield)
    signature = _input_signature(model, spec, tf)
    crops = _crops(spec, m)
    settings = otbtf_settings(spec, margin=m, efield=efield, model_dir=str(out_dir))

    @tf.function(input_signature=[signature])
    def serve(inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = model(inputs, training=False)
        result = {}
        for key, c in crops.items():
            y = outputs[key]
            result[key] = y
            shape = tf.shape(y)
            result[crop_name(key, c)] = y[:, c : shape[1] - c, c : shape[2] - c, :]
        return result

    archive = keras.export.ExportArchive()
    # No ``archive.track(model)``: the endpoint captures the variables it reads, and
    # tracking the model too stores every weight twice (keras-team/keras#23553), which
    # doubles the files and the memory of whatever loads them (OTBTF included).
    archive.add_endpoint(SERVE_ENDPOINT, serve)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        try:
            archive.write_out(str(tmp), verbose=False)
        except tf.errors.ResourceExhaustedError as err:
            # TensorFlow's file system reports a full disk so, not as an OSError; the
            # temporary folder is removed on the way out, nothing is left behind.
            raise OutputWriteError(f"writing the SavedModel failed, nothing was written: "
                                   f"no space left on device ({err.message})",
                                   path=out_dir) from err
        (tmp / OTBTF_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return out_dir


def _name_dims(proto: Any, spec: ModelSpec) -> None:
    """Readable names for the free dims (``batch``, ``height``, ``width_20m``...).

    tf2onnx names every free dimension ``unk__N``; sharing names between inputs and
    outputs of one resolution tells runtimes that they agree.
    """
    specs = {**spec.inputs, **spec.outputs}
    for value in [*proto.graph.input, *proto.graph.output]:
        s = specs.get(value.name)
        if s is None:
            raise ExportError(f"the ONNX graph has an unexpected input or output {value.name!r}",
                              field=value.name)
        dims = value.type.tensor_type.shape.dim
        suffix = "" if s.resolution in (0, _GRID) else f"_{s.resolution:g}m"
        names = ["batch", f"height{suffix}", f"width{suffix}"] if _is_image(s) else ["batch"]
        for dim, name in zip(dims, names, strict=False):
            if dim.HasField("dim_value"):
                raise ExportError(f"{value.name}: dimension {name} is fixed to "
                                  f"{dim.dim_value} in the ONNX graph", field=value.name)
            dim.dim_param = name


def export_onnx(model: keras.Model, spec: ModelSpec, path: str | Path, *, opset: int = 17,
                overwrite: bool = False) -> Path:
    """Write an ONNX graph of the model: inputs and outputs named by the dataset keys.

    Batch, height and width are free (named ``batch``, ``height``, ``width``, with a
    ``_20m`` suffix for 20 m tensors). The conversion is Keras' own
    (``model.export(format="onnx")``, through tf2onnx); the file is written under a
    temporary name and renamed once complete.

    Args:
        model: The Keras model (TensorFlow backend).
        spec: Its spec.
        path: The ``.onnx`` file to create.
        opset: ONNX opset.
        overwrite: Replace an existing file.

    Returns:
        ``path``.

    Raises:
        ExportError: Not the TensorFlow backend, a missing package (onnx, tf2onnx), a
            model that disagrees with its spec, or a conversion that fails.
        OutputExistsError: ``path`` exists and ``overwrite`` is not set.
    """
    tf = _tensorflow("the ONNX export")
    onnx = _module("onnx", "the ONNX export")
    _module("tf2onnx", "the ONNX export")
    path = Path(path)
    signature = _input_signature(model, spec, tf)
    with atomic_file(path, overwrite=overwrite) as tmp:
        try:
            model.export(str(tmp), format="onnx", input_signature=[signature],
                         opset_version=opset, verbose=False)
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
            raise ExportError(f"the ONNX conversion failed ({err})", path=path) from err
        proto = onnx.load(str(tmp))
        _name_dims(proto, spec)
        names = {v.name for v in proto.graph.output}
        if names != set(spec.outputs):
            raise ExportError(f"the ONNX graph gives {sorted(names)}, expected "
                              f"{sorted(spec.outputs)}", path=path)
        onnx.save(proto, str(tmp))
    return path


def _random_inputs(spec: ModelSpec, height: int, width: int, batch: int,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Raw values in realistic ranges, with a few nodata pixels (float32)."""
    out = {}
    for key, s in spec.inputs.items():
        if not _is_image(s):
            out[key] = rng.integers(-30, 31, size=(batch, s.channels)).astype(np.float32)
            continue
        h = _per_pixel(height, s.resolution, "size")
        w = _per_pixel(width, s.resolution, "size")
        shape = (batch, h, w, s.channels)
        kind = parse_key(key).kind
        # (low, high, integer-valued, nodata) of the raw encodings.
        low, high, integer, nodata = {
            KeyKind.DEM: (0, 2000, False, DEM_NODATA), KeyKind.S1: (1, 65535, True, S1_NODATA),
        }.get(kind, (0, 6000, True, S2_NODATA))
        x = (rng.integers(low, high + 1, size=shape) if integer
             else rng.uniform(low, high, size=shape)).astype(np.float32)
        x[rng.random(shape[:3]) < 0.01] = nodata  # the models map nodata to 0
        out[key] = x
    return out


def _difference(a: Any, b: Any, name: str, where: str) -> float:
    """Max absolute difference in normalised units (reflectance, not x 10000)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ExportError(f"{name}: shape {b.shape} in the export, {a.shape} in Keras",
                          path=where)
    if a.size == 0:
        return 0.0
    diff = float(np.max(np.abs(a - b))) / S2_SCALE
    return diff if math.isfinite(diff) else math.inf


def _crop(x: np.ndarray, c: int) -> np.ndarray:
    return x[:, c : x.shape[1] - c, c : x.shape[2] - c, :]


def _savedmodel_runner(spec: ModelSpec, folder: str | Path,
                       ) -> tuple[Any, dict[str, tuple[str, int]]]:
    """A function running a SavedModel's ``serving_default``; its crops by output name."""
    tf = _tensorflow("checking a SavedModel")
    try:
        loaded = tf.saved_model.load(str(folder))
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot load the SavedModel ({err})", path=folder) from err
    if _SERVING_DEFAULT not in loaded.signatures:
        raise ExportError(f"no {_SERVING_DEFAULT!r} signature", path=folder)
    fn = loaded.signatures[_SERVING_DEFAULT]
    missing = [key for key in spec.outputs if key not in fn.structured_outputs]
    if missing:
        raise ExportError(f"outputs {missing} missing from the SavedModel", path=folder)
    crops = {}
    for name in fn.structured_outputs:
        match = _CROP.match(name)
        if match and match["key"] in spec.outputs:
            crops[name] = (match["key"], int(match["crop"]))

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Through ``loaded``, which owns the variables the signature reads.
        got = loaded.signatures[_SERVING_DEFAULT](
            **{key: tf.constant(x) for key, x in inputs.items()})
        return {name: y.numpy() for name, y in got.items()}

    return run, crops


def _onnx_runner(spec: ModelSpec, path: str | Path) -> Any:
    """A function running an ONNX file with ONNX Runtime (CPU)."""
    ort = _module("onnxruntime", "checking an ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    missing = [key for key in spec.outputs if key not in names]
    if missing:
        raise ExportError(f"outputs {missing} missing from the ONNX graph", path=path)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


def check_agreement(model: keras.Model, spec: ModelSpec, savedmodel_dir: str | Path | None = None,
                    onnx_path: str | Path | None = None, *,
                    size: int | tuple[int, int] | None = None, seed: int = 0,
                    tol: float = 1e-4, batch: int = 1) -> dict[str, float]:
    """Check that exports compute what the Keras model computes.

    Random raw inputs in realistic ranges (S2 0..6000, S1 1..65535, DEM 0..2000 m,
    ``dt_*`` -30..30 days, 1 % nodata pixels) go through the Keras model, the
    SavedModel (``serving_default`` signature, as OTBTF calls it) and ONNX Runtime.
    Every output is compared, the SavedModel's ``<key>_crop<c>`` outputs against the
    cropped Keras output.

    Args:
        model: The Keras model.
        spec: Its spec.
        savedmodel_dir: A folder from :func:`export_savedmodel`, or None.
        onnx_path: A file from :func:`export_onnx`, or None.
        size: Height and width (or one side) of the inputs in 10 m px, multiples of the
            size multiple; default the smallest multiple >= 64 that leaves pixels after
            cropping.
        seed: Seed of the random inputs.
        tol: Largest difference allowed, in normalised units (values / 10000).
        batch: Batch size of the inputs.

    Returns:
        Differences by ``<format>/<output name>`` (normalised units).

    Raises:
        ExportError: A difference above ``tol`` (the message has the numbers), an
            output missing or of the wrong shape, or a bad ``size``.
    """
    k = spec.size_multiple
    runners: dict[str, tuple[str, Any]] = {}
    crops: dict[str, tuple[str, int]] = {}
    if savedmodel_dir is not None:
        run, crops = _savedmodel_runner(spec, savedmodel_dir)
        runners["savedmodel"] = (str(savedmodel_dir), run)
    if onnx_path is not None:
        runners["onnx"] = (str(onnx_path), _onnx_runner(spec, onnx_path))
    # The widest crop, in 10 m px: the inputs must be larger than twice that.
    widest = max((c * spec.outputs[key].resolution / _GRID for key, c in crops.values()),
                 default=0.0)
    if size is None:
        size = _round_up(max(64, 2 * k, 2 * widest + k), k)
    height, width = (size, size) if isinstance(size, int) else size
    if height % k or width % k or min(height, width) <= 2 * widest:
        raise ExportError(f"size {height} x {width} must be a multiple of {k} and larger "
                          f"than twice the crop ({widest:g} px)", field="size")
    inputs = _random_inputs(spec, height, width, batch, np.random.default_rng(seed))
    expected = {key: np.asarray(keras.ops.convert_to_numpy(y))
                for key, y in model(inputs, training=False).items()}
    diffs: dict[str, float] = {}
    for fmt, (where, run) in runners.items():
        got = run(inputs)
        for key in spec.outputs:
            diffs[f"{fmt}/{key}"] = _difference(expected[key], got[key], key, where)
        for name, (key, c) in crops.items() if fmt == "savedmodel" else ():
            diffs[f"{fmt}/{name}"] = _difference(_crop(expected[key], c), got[name], name,
                                                 where)
    bad = {name: d for name, d in diffs.items() if not d <= tol}
    if bad:
        numbers = ", ".join(f"{name} {d:.3g}" for name, d in bad.items())
        raise ExportError(f"the export disagrees with the Keras model: {numbers} "
                          f"(max abs difference, normalised units; tolerance {tol:g})",
                          path=runners[next(iter(bad)).split("/")[0]][0])
    return diffs


def load_for_export(model_path: str | Path,
                    config: str | Path | None = None) -> tuple[keras.Model, ModelSpec]:
    """Load a ``.keras`` model and rebuild its spec, to export it.

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
    # Only this entry point needs the card and the registry.
    from decloud.models.card import CARD_FILE, card_spec, load_model, read_keras
    from decloud.models.registry import get_config
    from decloud.models.zoo import build

    model_path = Path(model_path)
    if config is None:
        if not (model_path.parent / CARD_FILE).is_file():
            raise ExportError(f"no {CARD_FILE} next to the model: pass --config NAME (or a "
                              "YAML file) to rebuild its spec", path=model_path)
        model, card = load_model(model_path)
        spec = card_spec(card)
        name = str(card.get("name"))
    else:
        model_config = get_config(str(config))
        model = read_keras(model_path)
        _, spec = build(model_config)
        name = model_config.name
    inputs = {k: int(t.shape[-1]) for k, t in dict(model.input).items()}
    expected = {k: s.channels for k, s in spec.inputs.items()}
    if inputs != expected:
        raise ExportError(f"the configuration {name!r} takes {expected}, the model takes "
                          f"{inputs} (input: channels)", path=model_path, field="config")
    return model, spec
