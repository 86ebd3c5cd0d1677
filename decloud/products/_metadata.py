"""Strict reading of product metadata: every value checked, every error naming file and element.

Readers take numbers, dates and offsets from XML documents (``MTD_MSIL2A.xml``,
``MTD_MSIL1C.xml``, ``MTD_TL.xml``). A value that is missing, not a number, zero where
it divides, or not a date is a :class:`~decloud.errors.MetadataError` naming the
document and the element, never a ``ValueError`` or ``ZeroDivisionError`` from deep
inside a reader, and never a silent default that would shift every pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from decloud.errors import MetadataError

__all__ = [
    "BASELINE_WITH_OFFSETS",
    "SAFE_BAND_IDS",
    "XmlDocument",
    "band_offsets",
    "baseline_has_offsets",
    "parse_baseline",
    "parse_number",
    "parse_time",
    "require_offsets",
]

#: Physical band names of the SAFE metadata against ``band_id`` / ``bandId`` 0..12.
SAFE_BAND_IDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11",
                 "B12")

#: First processing baseline whose products carry radiometric offsets (BOA/RADIO_ADD_OFFSET,
#: -1000 DN), in force since 2022-01-25 and in the reprocessed Collection-1 archive.
BASELINE_WITH_OFFSETS = (4, 0)


def parse_number(raw: str | None, where: str, element: str, *, nonzero: bool = False) -> float:
    """A finite number from metadata text.

    Args:
        raw: The element's text (None when the element is missing).
        where: The metadata file, for the error.
        element: The element's name, for the error.
        nonzero: Refuse 0 (a quantification value divides).

    Raises:
        MetadataError: Missing, not a number, not finite, or zero where refused.
    """
    if raw is None or not raw.strip():
        raise MetadataError("the element is missing or empty", path=where, field=element)
    try:
        value = float(raw.strip())
    except ValueError as err:
        raise MetadataError(f"{raw.strip()!r} is not a number", path=where,
                            field=element) from err
    if not math.isfinite(value):
        raise MetadataError(f"{raw.strip()!r} is not a finite number", path=where,
                            field=element)
    if nonzero and value == 0:
        raise MetadataError("is 0, which would divide every pixel by zero", path=where,
                            field=element)
    return value


def parse_time(raw: str, where: str, element: str) -> datetime:
    """A UTC date-time from ISO 8601 metadata text (``2017-06-17T11:33:21.026Z``).

    Raises:
        MetadataError: Not an ISO 8601 date-time.
    """
    text = raw.strip()
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise MetadataError(f"{text!r} is not an ISO 8601 date-time", path=where,
                            field=element) from err
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def parse_baseline(raw: str, where: str, element: str = "PROCESSING_BASELINE") -> tuple[int, int]:
    """``04.00`` (metadata) or ``0400`` (product name) as ``(4, 0)``.

    Raises:
        MetadataError: Not a processing baseline.
    """
    text = raw.strip()
    digits = text.replace(".", "")
    if len(digits) != 4 or not digits.isdigit() or ("." in text and len(text) != 5):
        raise MetadataError(f"{text!r} is not a processing baseline (like 04.00)",
                            path=where, field=element)
    return int(digits[:2]), int(digits[2:])


def baseline_has_offsets(baseline: tuple[int, int]) -> bool:
    """Whether products of this processing baseline carry radiometric offsets."""
    return baseline >= BASELINE_WITH_OFFSETS


class XmlDocument:
    """A parsed metadata document that reports problems with its path.

    Args:
        raw: The document's bytes.
        where: Its path, named by every error.

    Raises:
        MetadataError: The bytes are not well-formed XML (truncated, not UTF-8...).
    """

    def __init__(self, raw: bytes, where: str) -> None:
        self.where = where
        try:
            self.root = ElementTree.fromstring(raw)
        except (ElementTree.ParseError, DefusedXmlException, UnicodeDecodeError) as err:
            raise MetadataError(f"not valid XML ({err})", path=where) from err

    def nodes(self, tag: str) -> Iterable[Any]:
        """Every element ``tag`` (without namespace) in document order."""
        return self.root.iter(tag)

    def text(self, tag: str) -> str | None:
        """Stripped text of the first element ``tag``, None when absent or empty."""
        node = next(self.root.iter(tag), None)
        if node is None or node.text is None or not node.text.strip():
            return None
        return str(node.text.strip())

    def number(self, tag: str, *, nonzero: bool = False) -> float:
        """The first element ``tag`` as a checked number (see :func:`parse_number`)."""
        return parse_number(self.text(tag), self.where, tag, nonzero=nonzero)

    def time(self, tag: str) -> datetime | None:
        """The first element ``tag`` as a UTC date-time, None when absent."""
        raw = self.text(tag)
        return None if raw is None else parse_time(raw, self.where, tag)

    def band_names(self) -> dict[str, str]:
        """``bandId`` -> decloud band name from ``Spectral_Information`` (or the SAFE order)."""
        names = {str(i): _canonical(b) for i, b in enumerate(SAFE_BAND_IDS)}
        for node in self.nodes("Spectral_Information"):
            band_id, physical = node.get("bandId"), node.get("physicalBand")
            if band_id is not None and physical:
                names[band_id] = _canonical(physical)
        return names

    def nodata(self) -> float:
        """The NODATA special value (0 when the document declares none)."""
        nodata = 0.0
        for node in self.nodes("Special_Values"):
            kind = node.find("SPECIAL_VALUE_TEXT")
            if kind is not None and (kind.text or "").strip().upper() == "NODATA":
                index = node.find("SPECIAL_VALUE_INDEX")
                nodata = parse_number(None if index is None else index.text, self.where,
                                      "SPECIAL_VALUE_INDEX")
        return nodata


def band_offsets(doc: XmlDocument, element: str) -> dict[str, float]:
    """Per-band additive offsets (``BOA_ADD_OFFSET``, ``RADIO_ADD_OFFSET``) by band name.

    Raises:
        MetadataError: An entry names an unknown band or holds no number.
    """
    names = doc.band_names()
    offsets: dict[str, float] = {}
    for node in doc.nodes(element):
        band_id = node.get("band_id", "")
        band = names.get(band_id)
        if band is None:
            raise MetadataError(f"entry for unknown band_id {band_id!r}", path=doc.where,
                                field=element)
        offsets[band] = parse_number(node.text, doc.where, f"{element}[band_id={band_id}]")
    return offsets


def require_offsets(offsets: Mapping[str, float], bands: Iterable[str], where: str,
                    element: str, baseline: str) -> None:
    """Refuse a product of baseline >= 04.00 whose metadata lacks an offset of a band it has.

    Reading such a band with offset 0 would make every pixel 0.1 too bright.

    Raises:
        MetadataError: Naming the element and the bands without an offset.
    """
    missing = sorted(b for b in bands if b not in offsets)
    if missing:
        what = "is missing" if not offsets else f"has no entry for {', '.join(missing)}"
        raise MetadataError(
            f"{what}: processing baseline {baseline} products carry a radiometric offset "
            "(-1000 DN) for every band, and reading without it would make every pixel "
            "0.1 too bright", path=where, field=element)


def _canonical(physical: str) -> str:
    """``B1`` -> ``B01``, ``B8A`` -> ``B8A``."""
    return f"B{int(physical[1:]):02d}" if physical[1:].isdigit() else physical
