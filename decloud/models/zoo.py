"""Builders of the model zoo: one configurable U-Net, DSen2-CR's ResNet, gap filling.

Every model takes raw dataset values under the dataset keys (``s2_<date>``,
``s2_20m_<date>``, ``s1_<date>``, ``dem``, and ``dt_<date>``, days from the reference,
for gap filling) and returns reflectance x 10000 under ``s2_<target>`` (and
``s2_20m_<target>`` for 20 m outputs). Models are fully convolutional: any input size
that is a multiple of :attr:`ModelSpec.size_multiple` works. The builders track the
receptive field of the output analytically as they stack layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers, ops

from decloud.constants import S1_POLARISATIONS
from decloud.errors import ModelInputSizeError
from decloud.keys import KeyKind, make_key, parse_key
from decloud.models.config import (
    GapfillConfig,
    ModelConfig,
    ModelConfigError,
    ResNetConfig,
    UNetConfig,
)
from decloud.models.normalization import NORMALISATION, Denormalize, Normalize

__all__ = ["MODEL_GRID", "InputSpec", "ModelSpec", "build"]


#: Pixel size of the grid models work on, metres: sizes, margins and crops are counted
#: in its pixels.
MODEL_GRID = 10.0


@dataclass(frozen=True)
class InputSpec:
    """One input (or output) of a model: its key, channels and pixel size.

    ``resolution`` is 0 for inputs that are not images (the ``dt_*`` days).
    """

    key: str
    channels: int
    resolution: float
    bands: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        """Whether the input has pixels (``(batch, height, width, channels)``)."""
        return self.resolution > 0

    @property
    def ratio(self) -> float:
        """Model-grid pixels per pixel of this input (2 for 20 m)."""
        return self.resolution / MODEL_GRID


@dataclass
class ModelSpec:
    """What a built model takes and gives, and its geometry.

    The geometry a tiled run needs lives here, not in the exporters: the model's
    inputs must have sides that are multiples of :attr:`size_multiple` (10 m px), an
    output pixel depends on :attr:`receptive_field` input pixels, and a block read
    with :attr:`margin` pixels of context on each side gives, once cropped by
    :meth:`crops`, the same pixels as the whole image (``Grid.windows(size,
    spec.margin, spec.size_multiple)``). :meth:`check_inputs` refuses inputs the
    model cannot take with :class:`~decloud.errors.ModelInputSizeError`.
    """

    name: str
    config: ModelConfig
    inputs: dict[str, InputSpec]
    outputs: dict[str, InputSpec]
    size_multiple: int
    receptive_field: int
    params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def margin(self) -> int:
        """The halo (10 m px on each side) a block needs to be seamless.

        Half the receptive field, rounded up to a multiple of the size multiple (so
        that blocks stay on the model's pooling lattice and 20 m inputs and outputs
        get whole pixels), and at least one size multiple. Every pixel of a block's
        core then has its whole receptive field inside the block.
        """
        k = self.size_multiple
        return max(k, -(-math.ceil(self.receptive_field / 2) // k) * k)

    def crops(self, margin: int | None = None) -> dict[str, int]:
        """Pixels to drop on each side of every output, in that output's own pixels.

        Args:
            margin: The margin the inputs were read with (10 m px); :attr:`margin`
                when None. It must be a multiple of the size multiple.

        Raises:
            ModelInputSizeError: A margin the outputs cannot be cropped by.
        """
        m = self.margin if margin is None else margin
        if m < 0 or m % self.size_multiple:
            raise ModelInputSizeError(f"model {self.name}: margin {m} must be >= 0 and a "
                                      f"multiple of the size multiple {self.size_multiple}",
                                      field="margin")
        out = {}
        for key, s in self.outputs.items():
            crop = m / s.ratio
            if crop != int(crop):
                raise ModelInputSizeError(f"model {self.name}: margin {m} px is not a whole "
                                          f"number of {s.resolution:g} m pixels of {key}",
                                          field="margin")
            out[key] = int(crop)
        return out

    def check_size(self, height: int, width: int, *, key: str | None = None) -> None:
        """Raise unless a ``height`` x ``width`` (10 m px) input is one the model takes.

        Raises:
            ModelInputSizeError: A side that is not a positive multiple of the size
                multiple; the message names the model, the input and the sizes.
        """
        k = self.size_multiple
        if height <= 0 or width <= 0 or height % k or width % k:
            what = f"input {key}" if key else "input"
            raise ModelInputSizeError(
                f"model {self.name} cannot take a {height} x {width} px (10 m) {what}: "
                f"sides must be positive multiples of {k} (pad with "
                f"decloud.windows.pad_to_multiple, or tile with Grid.windows(..., "
                f"multiple={k}))", field=key or "size")

    def check_inputs(self, inputs: Mapping[str, Any], *,
                     any_size: bool = False) -> tuple[int, int]:
        """Check raw NHWC inputs against the spec before the model runs.

        Every image input must be present with its channels, all must cover the same
        area (a 20 m input has half the 10 m pixels) and the sides must be multiples
        of the size multiple.

        Args:
            inputs: Arrays or tensors by dataset key, ``(batch, height, width,
                channels)`` for images.
            any_size: Skip the size multiple (for inputs about to be padded): a
                coarser input may then overhang the finest by less than one of its
                pixels (a 20 m grid covers an odd 10 m side with a last whole pixel).

        Returns:
            ``(height, width)`` of the inputs in 10 m px (of the finest input).

        Raises:
            ModelInputSizeError: A missing input, wrong channels, disagreeing sizes or
                sides that are not multiples of the size multiple.
        """
        extents: dict[str, tuple[int, int]] = {}
        for key, s in self.inputs.items():
            if key not in inputs:
                raise ModelInputSizeError(f"model {self.name} needs input {key}", field=key)
            if not s.is_image:
                continue
            shape = tuple(int(n) for n in inputs[key].shape)
            if len(shape) != 4 or shape[3] != s.channels:
                raise ModelInputSizeError(f"model {self.name}: input {key} has shape {shape}, "
                                          f"expected (batch, height, width, {s.channels})",
                                          field=key)
            extents[key] = (round(shape[1] * s.ratio), round(shape[2] * s.ratio))
        if not extents:
            return 0, 0
        finest = min(extents, key=lambda k: (self.inputs[k].ratio, extents[k]))
        size = extents[finest]
        for key, here in extents.items():
            slack = round(self.inputs[key].ratio) - 1 if any_size else 0
            if not all(0 <= h - s <= slack for h, s in zip(here, size, strict=True)):
                raise ModelInputSizeError(
                    f"model {self.name}: input {key} covers {here[0]} x {here[1]} px (10 m) "
                    f"but {finest} covers {size[0]} x {size[1]}", field=key)
        if not any_size:
            self.check_size(*size, key=finest)
        return size

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary (model card section)."""
        def io(specs: dict[str, InputSpec]) -> dict[str, Any]:
            return {k: {"channels": s.channels, "resolution_m": s.resolution,
                        "bands": list(s.bands)} for k, s in specs.items()}

        return {"name": self.name, "architecture": self.config.network.kind,
                "inputs": io(self.inputs), "outputs": io(self.outputs),
                "size_multiple": self.size_multiple,
                "receptive_field_px": self.receptive_field, "margin_px": self.margin,
                "params": self.params,
                "config": self.config.model_dump(mode="json")}


class _Graph:
    """Applies layers while tracking each tensor's receptive field and jump (10 m px)."""

    def __init__(self) -> None:
        self._rf: dict[int, tuple[float, float]] = {}

    def mark(self, tensor: Any, rf: float, jump: float) -> Any:
        self._rf[id(tensor)] = (rf, jump)
        return tensor

    def rf(self, tensor: Any) -> tuple[float, float]:
        return self._rf[id(tensor)]

    def apply(self, layer: Any, x: Any, *, kernel: int = 1, stride: int = 1,
              up: int = 1) -> Any:
        """Apply ``layer``: a kernel of ``kernel`` px, a stride, or an upsampling."""
        rf, jump = self.rf(x)
        y = layer(x)
        return self.mark(y, rf + (kernel - 1) * jump, jump * stride / up)

    def merge(self, layer: Any, xs: list[Any]) -> Any:
        """Concatenate or add tensors: the widest receptive field wins."""
        y = layer(xs)
        rfs = [self.rf(x) for x in xs]
        return self.mark(y, max(r for r, _ in rfs), min(j for _, j in rfs))


def _input(key: str, channels: int, resolution: float, bands: tuple[str, ...],
           inputs: dict[str, Any], specs: dict[str, InputSpec], graph: _Graph) -> Any:
    """A named raw input, normalised; 20 m inputs are upsampled to the 10 m grid."""
    scale, nodata = NORMALISATION[parse_key(key).kind]
    tensor = keras.Input(shape=(None, None, channels), name=key)
    inputs[key] = tensor
    specs[key] = InputSpec(key, channels, resolution, bands)
    x = graph.mark(Normalize(scale, nodata, name=f"normalize_{key}")(tensor),
                   resolution / 10.0, resolution / 10.0)
    if resolution == 20.0:
        x = graph.apply(Upsample2x(name=f"up_{key}"), x, kernel=2, up=2)
    return x


def _date_inputs(date: str, sources: list[str], bands: tuple[str, ...],
                 bands20: tuple[str, ...], inputs: dict[str, Any],
                 specs: dict[str, InputSpec], graph: _Graph) -> list[Any]:
    xs = []
    if "s2" in sources:
        xs.append(_input(make_key(KeyKind.S2, date), len(bands), 10.0, bands, inputs, specs,
                         graph))
    if "s2_20m" in sources:
        xs.append(_input(make_key(KeyKind.S2_20M, date), len(bands20), 20.0, bands20, inputs,
                         specs, graph))
    if "s1" in sources:
        xs.append(_input(make_key(KeyKind.S1, date), len(S1_POLARISATIONS), 10.0,
                         S1_POLARISATIONS, inputs, specs, graph))
    return xs


def _conv(width: int, name: str, kernel: int = 3, activation: str | None = "relu") -> Any:
    return layers.Conv2D(width, kernel, padding="same", activation=activation, name=name)


def _unet(config: ModelConfig, net: UNetConfig) -> tuple[keras.Model, ModelSpec]:
    graph = _Graph()
    inputs: dict[str, Any] = {}
    specs: dict[str, InputSpec] = {}
    widths, depth = net.widths, len(net.widths)
    bands, bands20 = tuple(net.s2_bands), tuple(net.s2_20m_bands)
    dem = None
    if net.dem:
        dem_in = _input(make_key(KeyKind.DEM), 1, 10.0, ("elevation",), inputs, specs, graph)
        # The DEM joins at half resolution: terrain matters at the scale of shadows.
        dem = graph.apply(layers.AveragePooling2D(2, name="dem_half"), dem_in, kernel=2,
                          stride=2)
    stems: dict[tuple[str, ...], Any] = {}
    encoder = [[_conv(widths[lvl], f"enc{lvl}_conv{i}") for i in range(net.convs_per_level)]
               for lvl in range(depth)]
    skips: list[list[Any]] = [[] for _ in range(depth)]
    for date in net.dates:
        sources = tuple(net.sources[date])
        xs = _date_inputs(date, list(sources), bands, bands20, inputs, specs, graph)
        x = xs[0] if len(xs) == 1 else graph.merge(
            layers.Concatenate(name=f"stack_{date}"), xs)
        if sources not in stems:  # one stem per distinct set of sources
            stems[sources] = _conv(widths[0], f"stem_{'_'.join(sources)}")
        x = graph.apply(stems[sources], x, kernel=3)
        for lvl in range(depth):
            if lvl > 0:
                x = graph.apply(layers.MaxPooling2D(2, name=f"pool{lvl}_{date}"), x,
                                kernel=2, stride=2)
                if lvl == 1 and dem is not None:
                    x = graph.merge(layers.Concatenate(name=f"dem_{date}"), [x, dem])
            for conv in encoder[lvl]:
                x = graph.apply(conv, x, kernel=3)
            skips[lvl].append(x)
    fused = []
    for lvl, feats in enumerate(skips):
        if len(feats) == 1:
            fused.append(feats[0])
            continue
        x = graph.merge(layers.Concatenate(name=f"fuse{lvl}_concat"), feats)
        fused.append(graph.apply(_conv(widths[lvl], f"fuse{lvl}", kernel=1), x))
    x = fused[-1]
    half = None
    for lvl in range(depth - 2, -1, -1):
        x = graph.apply(layers.Conv2DTranspose(widths[lvl], 2, strides=2, name=f"up{lvl}"), x,
                        up=2)
        x = graph.merge(layers.Concatenate(name=f"dec{lvl}_concat"), [x, fused[lvl]])
        for i in range(net.convs_per_level):
            x = graph.apply(_conv(widths[lvl], f"dec{lvl}_conv{i}"), x, kernel=3)
        if lvl == 1:
            half = x
    out = graph.apply(_conv(len(bands), "head", kernel=1, activation=None), x)
    outputs: dict[str, Any] = {}
    target = make_key(KeyKind.S2, config.target)
    if net.residual is not None:
        base = graph.apply(layers.Identity(name="residual_input"),
                           _normalized(inputs[make_key(KeyKind.S2, net.residual)], graph))
        out = graph.merge(layers.Add(name="residual"), [out, base])
    outputs[target] = layers.Activation("linear", name=target)(Denormalize()(out))
    out_specs = {target: InputSpec(target, len(bands), 10.0, bands)}
    rf = graph.rf(out)[0]
    if net.output_20m:
        # Decoder features at half resolution are already on the 20 m grid.
        y = half if half is not None else graph.apply(
            layers.AveragePooling2D(2, name="to_20m"), x, kernel=2, stride=2)
        y = graph.apply(_conv(len(bands20), "head_20m", kernel=1, activation=None), y)
        key = make_key(KeyKind.S2_20M, config.target)
        outputs[key] = layers.Activation("linear", name=key)(Denormalize()(y))
        out_specs[key] = InputSpec(key, len(bands20), 20.0, bands20)
        rf = max(rf, graph.rf(y)[0])
    model = keras.Model(inputs=inputs, outputs=outputs, name=config.name)
    multiple = 2 ** (depth - 1)
    uses_20m = net.dem or net.output_20m or any("s2_20m" in s for s in net.sources.values())
    spec = ModelSpec(config.name, config, specs, out_specs, max(multiple, 2 if uses_20m else 1),
                     int(rf))
    return model, spec


def _normalized(raw: Any, graph: _Graph) -> Any:
    """The normalised tensor of a raw input (reusing its Normalize layer's output)."""
    scale, nodata = NORMALISATION[KeyKind.S2]
    return graph.mark(Normalize(scale, nodata, name=f"normalize_{raw.name}_skip")(raw), 1, 1)


def _resnet(config: ModelConfig, net: ResNetConfig) -> tuple[keras.Model, ModelSpec]:
    graph = _Graph()
    inputs: dict[str, Any] = {}
    specs: dict[str, InputSpec] = {}
    date = net.date
    bands10, bands20 = tuple(net.s2_bands), tuple(net.s2_20m_bands)
    n10, n20 = len(bands10), len(bands20)
    xs = [_input(make_key(KeyKind.S2, date), n10, 10.0, bands10, inputs, specs, graph)]
    if n20:
        xs.append(_input(make_key(KeyKind.S2_20M, date), n20, 20.0, bands20, inputs, specs, graph))
    optical = xs[0] if len(xs) == 1 else graph.merge(layers.Concatenate(name="optical"), xs)
    x = optical
    if net.sar:
        sar = _input(make_key(KeyKind.S1, date), len(S1_POLARISATIONS), 10.0,
                     S1_POLARISATIONS, inputs, specs, graph)
        x = graph.merge(layers.Concatenate(name="optical_sar"), [optical, sar])
    x = graph.apply(_conv(net.features, "conv_in"), x, kernel=3)
    for b in range(net.blocks):
        y = graph.apply(_conv(net.features, f"block{b}_conv0"), x, kernel=3)
        y = graph.apply(_conv(net.features, f"block{b}_conv1", activation=None), y, kernel=3)
        y = graph.apply(layers.Rescaling(net.scaling, name=f"block{b}_scale"), y)
        x = graph.merge(layers.Add(name=f"block{b}_add"), [x, y])
    n_out = n10 + n20
    x = graph.apply(_conv(n_out, "conv_out", activation=None), x, kernel=3)
    # The long skip: the network predicts a correction of the cloudy input.
    x = graph.merge(layers.Add(name="long_skip"), [x, optical])
    target = make_key(KeyKind.S2, config.target)
    out10 = SliceChannels(0, n10, name="bands_10m")(x)
    outputs = {target: layers.Activation("linear", name=target)(Denormalize()(out10))}
    out_specs = {target: InputSpec(target, n10, 10.0, bands10)}
    if n20:
        key = make_key(KeyKind.S2_20M, config.target)
        out20 = SliceChannels(n10, n_out, name="bands_20m")(x)
        out20 = layers.AveragePooling2D(2, name="to_20m")(out20)
        outputs[key] = layers.Activation("linear", name=key)(Denormalize()(out20))
        out_specs[key] = InputSpec(key, n20, 20.0, bands20)
    model = keras.Model(inputs=inputs, outputs=outputs, name=config.name)
    spec = ModelSpec(config.name, config, specs, out_specs, 2 if n20 else 1,
                     int(graph.rf(x)[0]))
    return model, spec


@keras.saving.register_keras_serializable(package="decloud")
class Upsample2x(keras.layers.Layer):
    """Bilinear upsampling by 2 with pixel-area geometry (as GDAL), any input size.

    Each output pixel is 3/4 of the source pixel it lies in plus 1/4 of the neighbour on
    its side (edges replicate). Written with slicing and reshapes so that inputs of
    unknown height and width trace on TensorFlow, JAX and in exported graphs.
    """

    @staticmethod
    def _axis(x: Any, axis: int) -> Any:
        first = ops.take(x, ops.convert_to_tensor([0]), axis=axis)
        size = ops.shape(x)[axis]
        last = ops.take(x, ops.reshape(size - 1, (1,)), axis=axis)
        if axis == 1:
            before = ops.concatenate([first, x[:, :-1]], axis=1)
            after = ops.concatenate([x[:, 1:], last], axis=1)
        else:
            before = ops.concatenate([first, x[:, :, :-1]], axis=2)
            after = ops.concatenate([x[:, :, 1:], last], axis=2)
        even, odd = 0.75 * x + 0.25 * before, 0.75 * x + 0.25 * after
        stacked = ops.stack([even, odd], axis=axis + 1)
        shape = ops.shape(x)
        new = [shape[0], shape[1], shape[2], shape[3]]
        new[axis] = shape[axis] * 2
        return ops.reshape(stacked, new)

    def call(self, x: Any) -> Any:
        return self._axis(self._axis(x, 1), 2)

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        def twice(n: Any) -> Any:
            return None if n is None else 2 * n

        return (shape[0], twice(shape[1]), twice(shape[2]), shape[3])


@keras.saving.register_keras_serializable(package="decloud")
class SliceChannels(keras.layers.Layer):
    """Channels ``start:stop`` of a tensor (serialisable, unlike a Lambda)."""

    def __init__(self, start: int, stop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x: Any) -> Any:
        return x[..., self.start : self.stop]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="decloud")
class LinearInterpolation(keras.layers.Layer):
    """Interpolate two normalised images in time; where one is nodata, take the other."""

    def call(self, before: Any, after: Any, dt_before: Any, dt_after: Any) -> Any:
        w_before = ops.abs(ops.reshape(dt_after, (-1, 1, 1, 1)))
        w_after = ops.abs(ops.reshape(dt_before, (-1, 1, 1, 1)))
        ok_b = ops.cast(ops.not_equal(before, 0.0), "float32")
        ok_a = ops.cast(ops.not_equal(after, 0.0), "float32")
        wb, wa = w_before * ok_b, w_after * ok_a
        total = wb + wa
        safe = ops.where(ops.equal(total, 0.0), ops.ones_like(total), total)
        return (before * wb + after * wa) / safe


def _gapfill(config: ModelConfig, net: GapfillConfig) -> tuple[keras.Model, ModelSpec]:
    graph = _Graph()
    inputs: dict[str, Any] = {}
    specs: dict[str, InputSpec] = {}
    bands = tuple(net.s2_bands)
    before = _input(make_key(KeyKind.S2, net.before), len(bands), 10.0, bands, inputs, specs, graph)
    after = _input(make_key(KeyKind.S2, net.after), len(bands), 10.0, bands, inputs, specs, graph)
    dts = []
    for date in (net.before, net.after):
        key = make_key(KeyKind.DT, date)
        inputs[key] = keras.Input(shape=(1,), name=key)
        specs[key] = InputSpec(key, 1, 0.0, ("days",))
        dts.append(inputs[key])
    out = LinearInterpolation(name="interpolate")(before, after, dts[0], dts[1])
    target = make_key(KeyKind.S2, config.target)
    outputs = {target: layers.Activation("linear", name=target)(Denormalize()(out))}
    model = keras.Model(inputs=inputs, outputs=outputs, name=config.name)
    out_specs = {target: InputSpec(target, len(bands), 10.0, bands)}
    return model, ModelSpec(config.name, config, specs, out_specs, 1, 1)


def build(config: ModelConfig) -> tuple[keras.Model, ModelSpec]:
    """Build the Keras model of a configuration, and its spec."""
    net = config.network
    if isinstance(net, UNetConfig):
        model, spec = _unet(config, net)
    elif isinstance(net, ResNetConfig):
        model, spec = _resnet(config, net)
    elif isinstance(net, GapfillConfig):
        model, spec = _gapfill(config, net)
    else:  # pragma: no cover - the schema admits nothing else
        raise ModelConfigError(f"unknown architecture {net!r}", field="network.kind")
    spec.params = int(model.count_params())
    return model, spec
