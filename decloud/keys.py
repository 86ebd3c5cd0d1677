"""The key grammar shared by every layer, and each key's encoding.

Stacks, datasets, models, losses, metrics and exports exchange arrays named by
*keys*. This module is the one place where keys are built, parsed and described:

============== ======= ===== ==================== ====================================
key            dtype   res.  channels             values (raw, as stored)
============== ======= ===== ==================== ====================================
``s2_<a>``     int16   10 m  B02 B03 B04 B08      reflectance x 10000, nodata -10000
``s2_20m_<a>`` int16   20 m  B05 B06 B07 B8A B11  reflectance x 10000, nodata -10000
                             B12
``s2_mask_<a>`` uint8  10 m  mask                 :class:`~decloud.constants.MaskClass`,
                                                  255 nodata
``s1_<a>``     uint16  10 m  VV VH                prepared encoding (:mod:`decloud.s1`),
                                                  0 nodata
``dem``        float32 10 m  elevation            metres, nodata -32768
``dt_<a>``     float32 -     days                 days from the reference acquisition
                                                  to ``a`` (NaN: no product)
============== ======= ===== ==================== ====================================

``<a>`` is an acquisition name (``^[a-z][a-z0-9]*$``, ``mask`` excepted, see
:data:`RESERVED_ACQUISITIONS`): it has no underscore, so a key parses without
ambiguity. The single-date stacks of :mod:`decloud.stack` use the same kinds without an
acquisition (``s2``, ``s2_mask``, ``s1``, ``dem``).

Models take the raw values and normalise inside (:attr:`KindSpec.norm_scale`):
``normalised = raw * norm_scale``, nodata pixels become 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final, NamedTuple

import numpy as np

from decloud.constants import (
    DEM_NODATA,
    MASK_NODATA,
    S1_LN_MAX,
    S1_LN_MIN,
    S1_NODATA,
    S1_POLARISATIONS,
    S2_10M_BANDS,
    S2_20M_BANDS,
    S2_NODATA,
    S2_SCALE,
    MaskClass,
)
from decloud.errors import KeyGrammarError
from decloud.s1 import decode_prepared as decode_s1
from decloud.s1 import encode_prepared as encode_s1

__all__ = [
    "ACQUISITION_PATTERN",
    "CLOUD_CLASSES",
    "DT_PREFIX",
    "KINDS",
    "REFERENCE_RESOLUTION",
    "RESERVED_ACQUISITIONS",
    "KeyKind",
    "KindSpec",
    "ParsedKey",
    "acquisition_keys",
    "check_acquisition",
    "day_offset",
    "decode_s1",
    "decode_s2",
    "encode_s1",
    "encode_s2",
    "make_key",
    "parse_key",
]

#: Pixel size of the grid every key is aligned on, metres (S2's 10 m grid).
REFERENCE_RESOLUTION: Final = 10.0

#: Prefix of the derived keys ``dt_<acq>``: days from the reference acquisition.
DT_PREFIX: Final = "dt_"

#: Acquisition names: they become part of keys, hence no underscore.
ACQUISITION_PATTERN: Final = re.compile(r"[a-z][a-z0-9]*")

#: Names an acquisition cannot take: ``s2_mask`` is the stack's mask key, not the S2 key
#: of an acquisition called ``mask``.
RESERVED_ACQUISITIONS: Final = frozenset({"mask"})

#: Mask classes counted as cloud (or shadow) by losses and metrics: a pixel in one of
#: them is unusable in the cloudy image.
CLOUD_CLASSES: Final = (int(MaskClass.CLOUD), int(MaskClass.CIRRUS), int(MaskClass.SHADOW))


class KeyKind(StrEnum):
    """What a key holds; its value is the key's prefix."""

    S2 = "s2"
    S2_20M = "s2_20m"
    S2_MASK = "s2_mask"
    S1 = "s1"
    DEM = "dem"
    DT = "dt"


@dataclass(frozen=True)
class KindSpec:
    """The encoding of one kind of key.

    Attributes:
        kind: The kind.
        dtype: Numpy dtype name of the stored (raw) values.
        resolution: Pixel size in metres; 0 for ``dt``, which is one value per sample.
        default_bands: Channel names, in order, unless a dataset chooses others.
        nodata: The raw value of missing pixels.
        scale: ``physical = raw / scale`` where it applies (S2 reflectance), else None.
        encoding: How raw values encode physical quantities, in words.
        norm_scale: ``normalised = raw * norm_scale`` inside the models (nodata becomes
            0); None for kinds models do not normalise (masks, ``dt``).
        per_acquisition: Whether keys of this kind name an acquisition.
    """

    kind: KeyKind
    dtype: str
    resolution: float
    default_bands: tuple[str, ...]
    nodata: float
    scale: float | None
    encoding: str
    norm_scale: float | None
    per_acquisition: bool

    @property
    def spatial(self) -> bool:
        """Whether the key is an image (``(H, W, C)``), not one value per sample."""
        return self.resolution > 0


_S2_ENCODING: Final = f"reflectance x {S2_SCALE:g}, nodata {S2_NODATA}"
_S1_ENCODING: Final = (
    f"prepared: 1 + (clip(ln sigma0, {S1_LN_MIN:g}, {S1_LN_MAX:g}) - ({S1_LN_MIN:g})) / "
    f"{S1_LN_MAX - S1_LN_MIN:g} x 65534, nodata {S1_NODATA} "
    "(decloud.s1.decode_prepared gives linear sigma0)")

#: The table of key kinds.
KINDS: Final[Mapping[KeyKind, KindSpec]] = MappingProxyType({
    KeyKind.S2: KindSpec(KeyKind.S2, "int16", 10.0, tuple(S2_10M_BANDS), S2_NODATA, S2_SCALE,
                         _S2_ENCODING, 1.0 / S2_SCALE, True),
    KeyKind.S2_20M: KindSpec(KeyKind.S2_20M, "int16", 20.0, tuple(S2_20M_BANDS), S2_NODATA,
                             S2_SCALE, _S2_ENCODING, 1.0 / S2_SCALE, True),
    KeyKind.S2_MASK: KindSpec(KeyKind.S2_MASK, "uint8", 10.0, ("mask",), MASK_NODATA, None,
                              "MaskClass: 0 clear, 1 cloud, 2 cirrus, 3 shadow, 255 nodata",
                              None, True),
    KeyKind.S1: KindSpec(KeyKind.S1, "uint16", 10.0, tuple(S1_POLARISATIONS), S1_NODATA, None,
                         _S1_ENCODING, 1.0 / 65535.0, True),
    KeyKind.DEM: KindSpec(KeyKind.DEM, "float32", 10.0, ("elevation",), DEM_NODATA, None,
                          f"metres, nodata {DEM_NODATA:g}", 1.0 / 1000.0, False),
    KeyKind.DT: KindSpec(KeyKind.DT, "float32", 0.0, ("days",), float("nan"), None,
                         "days from the reference acquisition's date, NaN: no product",
                         None, True),
})

# Longest prefixes first: "s2_20m_t" is an s2_20m key, never an s2 key of "20m_t".
_KEY = re.compile(r"(?P<kind>s2_20m|s2_mask|s2|s1|dt|dem)(?:_(?P<acq>[a-z][a-z0-9]*))?")


class ParsedKey(NamedTuple):
    """A key split into its kind and acquisition (None for ``dem`` and stack keys)."""

    kind: KeyKind
    acquisition: str | None

    @property
    def spec(self) -> KindSpec:
        """The kind's encoding."""
        return KINDS[self.kind]


def check_acquisition(name: str) -> str:
    """Return an acquisition name if keys can carry it.

    Raises:
        KeyGrammarError: The name does not match ``^[a-z][a-z0-9]*$`` or is reserved.
    """
    if not ACQUISITION_PATTERN.fullmatch(name):
        raise KeyGrammarError(f"acquisition name {name!r} must match ^[a-z][a-z0-9]*$ "
                              "(it becomes keys such as s2_<name>)", field=name)
    if name in RESERVED_ACQUISITIONS:
        raise KeyGrammarError(f"acquisition name {name!r} is reserved "
                              f"({'s2_' + name} is the stack's mask key)", field=name)
    return name


def make_key(kind: KeyKind | str, acquisition: str | None = None) -> str:
    """The key of a kind and acquisition: ``make_key("s2", "t") == "s2_t"``.

    Args:
        kind: A :class:`KeyKind` or its value.
        acquisition: The acquisition; None for ``dem`` and for the single-date stack
            keys (``s2``, ``s2_20m``, ``s2_mask``, ``s1``).

    Raises:
        KeyGrammarError: Unknown kind, a bad acquisition name, an acquisition given to
            ``dem`` or none given to ``dt``.
    """
    try:
        k = KeyKind(kind)
    except ValueError as err:
        raise KeyGrammarError(f"unknown key kind {kind!r} (kinds: "
                              f"{', '.join(KeyKind)})", field=str(kind)) from err
    if acquisition is None:
        if k is KeyKind.DT:
            raise KeyGrammarError("a dt key needs an acquisition", field=str(k))
        return str(k)
    if not KINDS[k].per_acquisition:
        raise KeyGrammarError(f"{k} keys have no acquisition (got {acquisition!r})",
                              field=str(k))
    return f"{k}_{check_acquisition(acquisition)}"


def parse_key(key: str) -> ParsedKey:
    """Split a key into its kind and acquisition.

    Raises:
        KeyGrammarError: The key follows no rule of the grammar.
    """
    match = _KEY.fullmatch(key)
    if match is None:
        raise KeyGrammarError(f"{key!r} is not a decloud key (kinds: "
                              f"{', '.join(KeyKind)}, then _<acquisition>)", field=key)
    kind = KeyKind(match["kind"])
    acq = match["acq"]
    if acq is not None and not KINDS[kind].per_acquisition:
        raise KeyGrammarError(f"{key!r} is not a decloud key ({kind} has no acquisition)",
                              field=key)
    if acq in RESERVED_ACQUISITIONS:
        raise KeyGrammarError(f"{key!r} is not a decloud key ({acq!r} is a reserved "
                              "acquisition name)", field=key)
    if acq is None and kind is KeyKind.DT:
        raise KeyGrammarError(f"{key!r} is not a decloud key (dt needs an acquisition)",
                              field=key)
    return ParsedKey(kind, acq)


def acquisition_keys(acquisition: str, *, s2: bool = True, s1: bool = False) -> list[str]:
    """The stored keys of one acquisition, in dataset order.

    ``s2_<a>``, ``s2_20m_<a>``, ``s2_mask_<a>`` when it has S2, then ``s1_<a>`` when it
    has S1.
    """
    kinds = ([KeyKind.S2, KeyKind.S2_20M, KeyKind.S2_MASK] if s2 else []) + \
        ([KeyKind.S1] if s1 else [])
    return [make_key(k, acquisition) for k in kinds]


def encode_s2(reflectance: np.ndarray) -> np.ndarray:
    """Reflectance (NaN nodata) to decloud's int16 encoding (x 10000, nodata -10000).

    Values are rounded to the nearest integer and clipped to the int16 range above the
    nodata value, so no valid pixel ever reads as nodata.
    """
    reflectance = np.asarray(reflectance)
    # Whole-array passes in place on one float buffer: a boolean-mask gather and scatter
    # cost several times more. The buffer has the dtype ``reflectance[ok] * S2_SCALE``
    # would have, so the rounding (and any float overflow to inf) is the same.
    scaled = np.multiply(reflectance, S2_SCALE)
    np.rint(scaled, out=scaled)
    np.clip(scaled, S2_NODATA + 1, np.iinfo(np.int16).max, out=scaled)
    # Clipping turned +-inf into valid values: nodata is decided on the input.
    np.copyto(scaled, S2_NODATA, where=~np.isfinite(reflectance))
    return scaled.astype(np.int16)


def decode_s2(encoded: np.ndarray) -> np.ndarray:
    """The int16 encoding back to float32 reflectance, NaN where nodata."""
    encoded = np.asarray(encoded)
    out = encoded.astype(np.float32) / np.float32(S2_SCALE)
    out[encoded == S2_NODATA] = np.nan
    return out


def day_offset(when: datetime | None, reference: datetime | None) -> float:
    """The value of a ``dt_<acq>`` key: days from ``reference`` to ``when``.

    Args:
        when: The acquisition's date (its S2 product's, else its S1's), None if it has
            no product.
        reference: The reference acquisition's date, None if it has no product.

    Returns:
        Fractional days (negative before the reference), NaN if either date is None.
    """
    if when is None or reference is None:
        return math.nan
    return (when - reference).total_seconds() / 86400.0
