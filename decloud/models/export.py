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

The OTBTF geometry (margin, expression field, padding, ``rfield``), the checks (a
margin below half the receptive field is refused) and the command lines live in
:mod:`decloud.models.otbtf`; its names are re-exported here.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from decloud.constants import DEM_NODATA, S1_NODATA, S2_NODATA, S2_SCALE
from decloud.errors import ExportError, OutputWriteError
from decloud.keys import KeyKind, parse_key
from decloud.models.otbtf import (
    DEFAULT_EFIELD,
    OTBTF_FILE,
    crop_name,
    otbtf_settings,
)
from decloud.models.otbtf import check_geometry as _check_geometry
from decloud.models.otbtf import is_image as _is_image
from decloud.models.otbtf import per_pixel as _per_pixel
from decloud.models.zoo import ModelSpec
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
            default half the receptive field rounded up (:func:`default_margin`); at
            least half the receptive field.
        efield: Output patch side for the OTBTF command line (10 m px).
        overwrite: Replace an existing ``out_dir``.

    Returns:
        ``out_dir``.

    Raises:
        MarginTooSmallError: ``margin`` below half the receptive field (an
            :class:`ExportError`).
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
    # OTBTF resolves -model.dir from its own working directory: name it absolutely.
    settings = otbtf_settings(spec, margin=m, efield=efield,
                              model_dir=str(out_dir.resolve()))

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
