"""The block-method interface every reconstruction method of the engine implements.

The streaming engine (:func:`decloud.inference.engine.run`) knows nothing about models:
it reads the keys a :class:`BlockMethod` asks for on padded blocks (a halo of
:attr:`BlockMethod.margin` px on each side, sides multiples of
:attr:`BlockMethod.size_multiple`), batches them, calls the method, crops the halo off,
composites and encodes. A method is any object with these attributes:

* ``name``: what the provenance and the completion record call it;
* ``input_keys``: the :class:`~decloud.inputs.KeyRequest` s :func:`~decloud.inputs.read_inputs`
  must return (keys, bands, resolutions);
* ``output_bands``: the S2 bands of the reconstruction, in order;
* ``margin``: the halo (10 m px) a block needs on each side for the output to have no
  seams;
* ``size_multiple``: padded block sides must be multiples of it;
* ``extras``: names of the per-pixel extras it returns (``("days",)`` for
  gap-filling: the engine then writes a days band), ``()`` for none;
* ``__call__(inputs) -> BlockResult``: ``inputs`` maps each key to the ``(B, H, W, C)``
  encoded arrays of a batch of padded blocks (``(B, 1)`` for ``dt_*``);
* ``describe() -> dict``: JSON-ready provenance (model, card checksum, parameters).

:class:`KerasMethod` wraps a zoo model (:func:`decloud.models.zoo.build`, or a trained
``.keras`` file and its spec) with the checked :func:`decloud.models.predict`; the
gap-filling and patch-group methods plug in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from decloud.errors import InferenceError
from decloud.inputs import InputKey, KeyRequest
from decloud.keys import KeyKind, parse_key

if TYPE_CHECKING:  # Keras is imported by KerasMethod's calls only: other methods need none.
    import keras

    from decloud.models.zoo import ModelSpec

__all__ = ["BlockMethod", "BlockResult", "KerasMethod"]


@dataclass(frozen=True)
class BlockResult:
    """What a method gives for a batch of padded blocks.

    Attributes:
        reflectance: Reflectance x 10000, float32 ``(B, H, W, len(output_bands))`` on
            the padded blocks; NaN where the method has no value.
        extras: Optional per-pixel layers ``(B, H, W)`` float32 by name. The engine
            writes ``"days"`` (temporal distance, days, to the observations used; NaN
            none) as a uint16 band.
    """

    reflectance: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)


@runtime_checkable
class BlockMethod(Protocol):
    """A reconstruction method the engine applies block by block (see the module doc)."""

    # Read-only properties: a plain attribute of a narrower type implements them.
    @property
    def name(self) -> str:
        """What the provenance and the completion record call the method."""

    @property
    def input_keys(self) -> tuple[KeyRequest, ...]:
        """The keys :func:`~decloud.inputs.read_inputs` reads for every block."""

    @property
    def output_bands(self) -> tuple[str, ...]:
        """The S2 bands of the reconstruction, in order."""

    @property
    def margin(self) -> int:
        """Halo (10 m px) a block needs on each side for a seamless output."""

    @property
    def size_multiple(self) -> int:
        """Padded block sides must be multiples of it."""

    @property
    def extras(self) -> tuple[str, ...]:
        """Names of the per-pixel extras of :class:`BlockResult` (``("days",)``)."""

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        """Reconstruct a batch of padded blocks (inputs: key -> ``(B, H, W, C)``)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance of the method (name, model, checksum, parameters)."""


class KerasMethod:
    """A zoo model as a block method.

    The model takes the raw (encoded) inputs of its spec and gives reflectance x 10000
    (the zoo's contract). Only the output at 10 m is written: for models that also
    reconstruct 20 m bands (``dsen2cr``) the 20 m output is not used by the engine.

    Args:
        model: The Keras model (built by :func:`decloud.models.zoo.build` or loaded
            from a ``.keras`` file).
        spec: Its :class:`~decloud.models.ModelSpec`.
        output_key: The output to write; the spec's only 10 m output when None.
        checksum: SHA-256 of the model file, for provenance; None for an untrained or
            in-memory model.
        card_checksum: SHA-256 of its model card file, for provenance.
        source: Where the model came from (a path or ``config:<name>``), for provenance.

    Raises:
        InferenceError: ``output_key`` is not a 10 m S2 output of the model, or the
            spec has none.
    """

    def __init__(self, model: keras.Model, spec: ModelSpec, *, output_key: str | None = None,
                 checksum: str | None = None, card_checksum: str | None = None,
                 source: str | None = None) -> None:
        tenm = [k for k, s in spec.outputs.items() if s.is_image and s.ratio == 1.0
                and parse_key(k).kind is KeyKind.S2]
        if output_key is None:
            if len(tenm) != 1:
                raise InferenceError(f"model {spec.name} has {len(tenm)} 10 m S2 outputs "
                                     f"({', '.join(tenm) or 'none'}): name one",
                                     field="output_key")
            output_key = tenm[0]
        if output_key not in tenm:
            raise InferenceError(f"model {spec.name} has no 10 m S2 output {output_key!r} "
                                 f"(outputs: {', '.join(spec.outputs)})", field="output_key")
        self.model = model
        self.spec = spec
        self.output_key = output_key
        self.checksum = checksum
        self.card_checksum = card_checksum
        self.source = source
        self.name = spec.name
        self.input_keys: tuple[KeyRequest, ...] = tuple(
            InputKey.of(key, bands=s.bands if parse_key(key).kind in
                        (KeyKind.S2, KeyKind.S2_20M) and s.bands else None,
                        resolution=s.resolution if s.is_image else None)
            for key, s in spec.inputs.items())
        self.output_bands: tuple[str, ...] = tuple(spec.outputs[output_key].bands)
        self.margin = spec.margin
        self.size_multiple = spec.size_multiple
        self.extras: tuple[str, ...] = ()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> BlockResult:
        """Run the model on a batch of padded blocks (sizes checked by the spec)."""
        from decloud.models.inference import predict  # imports Keras

        outputs = predict(self.model, self.spec, inputs)
        return BlockResult(outputs[self.output_key])

    def describe(self) -> dict[str, Any]:
        """The model's name, source, checksum, geometry and size."""
        return {"method": "keras", "name": self.name, "source": self.source,
                "model_checksum": self.checksum, "card_checksum": self.card_checksum,
                "output_key": self.output_key,
                "margin_px": self.margin, "size_multiple": self.size_multiple,
                "receptive_field_px": self.spec.receptive_field, "params": self.spec.params}
