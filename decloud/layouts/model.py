"""The acquisition layout model: pydantic classes and their validation rules.

Validation problems are raised as :class:`~decloud.errors.LocatedValueError` (a
``ValueError``, defined in :mod:`decloud.errors` with every other error) so that
pydantic wraps them in its ``ValidationError`` while keeping, in ``loc``, the position
of the offending value below the model that raised it; :mod:`decloud.layouts.loader`
appends it to pydantic's location to point at the exact key and line of the file.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from decloud.errors import LocatedValueError
from decloud.keys import (
    ACQUISITION_PATTERN,
    RESERVED_ACQUISITIONS,
    KeyKind,
    acquisition_keys,
    make_key,
)

__all__ = [
    "ACQUISITION_NAME",
    "Acquisition",
    "Bound",
    "Layout",
    "LocatedValueError",
    "RandInt",
    "S1Spec",
    "S2Spec",
]

#: Acquisition names become dataset keys (``s2_<name>``), hence this strict pattern.
ACQUISITION_NAME: re.Pattern[str] = ACQUISITION_PATTERN

#: S1 relative orbits are numbered 1 to 175 (12-day repeat cycle).
_S1_ORBITS = (1, 175)


class RandInt(BaseModel):
    """A cloud bound drawn per sample with the sampler's seed (``{randint: [a, b]}``).

    Both ends are inclusive, ``a <= b``, and both lie in [0, 100].
    """

    model_config = ConfigDict(extra="forbid")
    randint: tuple[StrictInt, StrictInt]

    @field_validator("randint")
    @classmethod
    def _in_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        for i, bound in enumerate(value):
            if not 0 <= bound <= 100:
                raise LocatedValueError(f"randint bound {bound} is outside [0, 100]", (i,))
        if low > high:
            raise LocatedValueError(f"randint [{low}, {high}] is inverted (a > b)")
        return value

    def label(self) -> str:
        """Short text for tables, e.g. ``rand[0-2]``."""
        return f"rand[{self.randint[0]}-{self.randint[1]}]"


#: A cloud-percentage bound: fixed, or drawn per sample.
Bound = float | RandInt


def _bound(value: Any, index: int) -> float | RandInt:
    """Check one cloud bound given as a number, a RandInt or a ``{randint: ...}`` mapping."""
    if isinstance(value, RandInt):
        return value
    if isinstance(value, dict):
        try:
            return RandInt.model_validate(value)
        except ValidationError as err:
            first = err.errors()[0]
            cause = first.get("ctx", {}).get("error")
            sub = tuple(first["loc"]) + (cause.loc if isinstance(cause, LocatedValueError) else ())
            message = str(cause) if cause is not None else first["msg"]
            if first["type"] == "extra_forbidden":
                message = f"unknown key {first['loc'][-1]!r} (write {{randint: [a, b]}})"
            raise LocatedValueError(message, (index, *sub)) from err
    # bool is an int: reject it explicitly, `true` is a typo, not 1 %.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LocatedValueError(
            f"cloud bound {value!r} is neither a number in [0, 100] nor {{randint: [a, b]}}",
            (index,))
    if not 0 <= value <= 100:
        raise LocatedValueError(f"cloud bound {value:g} is outside [0, 100]", (index,))
    return float(value)


class S2Spec(BaseModel):
    """What an acquisition asks of its Sentinel-2 image.

    Attributes:
        cloud: Inclusive [min, max] percentage of cloudy pixels in the patch. Written
            ``[1, 100]`` or ``{min: 1, max: 100}`` (missing ends default to 0 and 100);
            each bound is a number or ``{randint: [a, b]}``.
        nodata_max: Largest percentage of nodata pixels allowed in the patch.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    cloud: tuple[Bound, Bound] = (0.0, 100.0)
    nodata_max: float = Field(default=0.0, ge=0, le=100)

    @field_validator("cloud", mode="before")
    @classmethod
    def _cloud_range(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = [k for k in value if k not in ("min", "max")]
            if unknown:
                raise LocatedValueError(
                    f"unknown key {unknown[0]!r} in cloud (use min and max)", (unknown[0],))
            value = (value.get("min", 0), value.get("max", 100))
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise LocatedValueError("cloud is [min, max] or {min: .., max: ..}")
        low, high = (_bound(v, i) for i, v in enumerate(value))
        # Only fixed bounds can be checked here; drawn ones are swapped by resolve().
        if isinstance(low, float) and isinstance(high, float) and low > high:
            raise LocatedValueError(f"cloud range [{low:g}, {high:g}] is inverted (min > max)")
        return (low, high)


class S1Spec(BaseModel):
    """What an acquisition asks of its Sentinel-1 image.

    Attributes:
        max_gap_hours: Largest ``|t_S1 - t_S2|`` allowed, in hours; unused when the
            acquisition has no S2.
        pass_direction: ``ASC`` or ``DES``; any when None.
        relative_orbits: Allowed relative orbits (1-175); any when empty.
        nodata_max: Largest percentage of nodata pixels allowed in the patch.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_gap_hours: float = Field(default=72.0, ge=0)
    pass_direction: Literal["ASC", "DES"] | None = None
    relative_orbits: list[int] = Field(default_factory=list)
    nodata_max: float = Field(default=0.0, ge=0, le=100)

    @field_validator("relative_orbits")
    @classmethod
    def _orbits(cls, value: list[int]) -> list[int]:
        for i, orbit in enumerate(value):
            if not _S1_ORBITS[0] <= orbit <= _S1_ORBITS[1]:
                raise LocatedValueError(f"relative orbit {orbit} is outside 1-175", (i,))
        if len(set(value)) != len(value):
            raise LocatedValueError("a relative orbit is listed twice")
        return value


class Acquisition(BaseModel):
    """One named acquisition of a layout.

    Attributes:
        reference: The time origin of the layout (exactly one acquisition is).
        window_hours: [start, end] in hours relative to the reference's S2 date;
            required unless ``reference`` (where it is left out, or ``[0, 0]``).
        s2: Sentinel-2 constraints, None when the acquisition has no S2 image.
        s1: Sentinel-1 constraints, None when the acquisition has no S1 image.
        description: Free text.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    reference: bool = False
    window_hours: tuple[float, float] | None = Field(default=None, validate_default=True)
    s2: S2Spec | None = None
    s1: S1Spec | None = None
    description: str = ""

    @field_validator("window_hours")
    @classmethod
    def _window(
        cls, value: tuple[float, float] | None, info: ValidationInfo
    ) -> tuple[float, float] | None:
        if "reference" not in info.data:  # reference itself is invalid, reported already
            return value
        if info.data["reference"]:
            if value is not None and value != (0, 0):
                raise LocatedValueError(
                    "the reference is the time origin: leave window_hours out")
            return None
        if value is None:
            raise LocatedValueError(
                "window_hours [start, end] is required (or mark the acquisition reference: true)")
        if value[0] > value[1]:
            raise LocatedValueError(
                f"window [{value[0]:g}, {value[1]:g}] h is inverted (start > end)")
        return value

    @model_validator(mode="after")
    def _has_sensor(self) -> Acquisition:
        if self.s2 is None and self.s1 is None:
            raise LocatedValueError("an acquisition needs s2, s1 or both")
        return self


def _draw(bound: float | RandInt, rng: np.random.Generator) -> float:
    """A fixed bound as is, a RandInt drawn inclusive of both ends."""
    if isinstance(bound, RandInt):
        low, high = bound.randint
        return int(rng.integers(low, high + 1))
    return bound


class Layout(BaseModel):
    """A named arrangement of acquisitions that one training sample needs.

    Attributes:
        name: Layout name.
        description: What the layout is for.
        acquisitions: Acquisitions by name, in file order (the order of :meth:`keys`).
        dem: Samples also carry the DEM patch (dataset key ``dem``).
        siblings: Groups of acquisitions that must be the same S2 image.
        source: The file the layout was loaded from; ignored by ``==``.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    acquisitions: dict[str, Acquisition]
    dem: bool = False
    siblings: list[list[str]] = Field(default_factory=list)
    source: str | None = None

    @field_validator("acquisitions")
    @classmethod
    def _names(cls, value: dict[str, Acquisition]) -> dict[str, Acquisition]:
        if not value:
            raise LocatedValueError("a layout needs at least one acquisition")
        for name in value:
            if not ACQUISITION_NAME.fullmatch(name):
                raise LocatedValueError(
                    f"acquisition name {name!r} must match ^[a-z][a-z0-9]*$ "
                    "(it becomes dataset keys such as s2_<name>)", (name,))
            if name in RESERVED_ACQUISITIONS:
                raise LocatedValueError(
                    f"acquisition name {name!r} is reserved (keys would be ambiguous)",
                    (name,))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Layout:
        refs = [name for name, acq in self.acquisitions.items() if acq.reference]
        if not refs:
            raise LocatedValueError(
                "no reference acquisition: mark one with reference: true", ("acquisitions",))
        if len(refs) > 1:
            raise LocatedValueError(
                f"several references ({', '.join(refs)}): exactly one acquisition is the "
                "time origin", ("acquisitions", refs[1], "reference"))
        for g, group in enumerate(self.siblings):
            if len(set(group)) < 2:
                raise LocatedValueError(
                    "a sibling group names at least two different acquisitions", ("siblings", g))
            for m, member in enumerate(group):
                acq = self.acquisitions.get(member)
                if acq is None:
                    raise LocatedValueError(
                        f"sibling {member!r} is not an acquisition of this layout "
                        f"({', '.join(self.acquisitions)})", ("siblings", g, m))
                if acq.s2 is None:
                    raise LocatedValueError(
                        f"sibling {member!r} has no s2: siblings share one S2 image",
                        ("siblings", g, m))
        return self

    def __eq__(self, other: object) -> bool:
        # Where a layout was read from does not change what it asks for.
        if not isinstance(other, Layout):
            return NotImplemented
        return self.model_dump(exclude={"source"}) == other.model_dump(exclude={"source"})

    @property
    def reference_name(self) -> str:
        """Name of the reference (time origin) acquisition."""
        return next(name for name, acq in self.acquisitions.items() if acq.reference)

    def resolve(self, rng: np.random.Generator) -> Layout:
        """A copy with every random cloud bound drawn.

        Bounds are drawn with ``rng.integers(a, b + 1)`` in acquisition order, min
        before max, so that a seed gives the same layout everywhere; fixed bounds draw
        nothing. When the drawn min exceeds the max (possible when either is random)
        the two are swapped, so that the range stays a valid [min, max].

        Args:
            rng: The sampler's random generator.

        Returns:
            A resolved layout (:meth:`is_resolved` is True); self is left unchanged.
        """
        # A deep copy first: the result shares nothing with self, whatever is changed.
        out = self.model_copy(deep=True)
        for acq in out.acquisitions.values():
            if acq.s2 is not None:
                low = _draw(acq.s2.cloud[0], rng)
                high = _draw(acq.s2.cloud[1], rng)
                acq.s2.cloud = (high, low) if low > high else (low, high)
        return out

    def is_resolved(self) -> bool:
        """Whether no cloud bound is random any more."""
        return not any(
            isinstance(bound, RandInt)
            for acq in self.acquisitions.values() if acq.s2 is not None
            for bound in acq.s2.cloud)

    def keys(self) -> list[str]:
        """Dataset keys of a sample, in acquisition order.

        ``s2_<name>``, ``s2_20m_<name>``, ``s2_mask_<name>`` for an acquisition with
        S2, ``s1_<name>`` for one with S1, then ``dem`` when the layout has a DEM.
        """
        out: list[str] = []
        for name, acq in self.acquisitions.items():
            out += acquisition_keys(name, s2=acq.s2 is not None, s1=acq.s1 is not None)
        if self.dem:
            out.append(make_key(KeyKind.DEM))
        return out
