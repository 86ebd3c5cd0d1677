"""Sentinel-1 backscatter units and decloud's "prepared" uint16 encoding.

S1Tiling writes linear sigma0 (float32). decloud stores S1 as ``uint16``:

    DN = 1 + round((clip(ln(sigma0), S1_LN_MIN, S1_LN_MAX) - S1_LN_MIN)
                   / (S1_LN_MAX - S1_LN_MIN) * 65534)

so DN 1..65535 covers ln(sigma0) in [-10, 3] (about -43 dB to +13 dB) in steps of
2e-4 (0.0009 dB), and DN 0 (:data:`~decloud.constants.S1_NODATA`) is nodata. This is
the encoding of the ``s1_<acq>`` keys: :mod:`decloud.keys` exports the codec as
``encode_s1`` / ``decode_s1`` next to the other keys' encodings.
"""

from __future__ import annotations

import numpy as np

from decloud.constants import S1_LN_MAX, S1_LN_MIN, S1_NODATA
from decloud.errors import ArgumentError

__all__ = [
    "PREPARED_ENCODING_TAG",
    "db_to_linear",
    "decode_prepared",
    "encode_prepared",
    "linear_to_db",
]

#: GeoTIFF tag (value "ln_clip") marking a raster in the prepared encoding.
PREPARED_ENCODING_TAG = "DECLOUD_S1_ENCODING"

_STEPS = 65534.0


def linear_to_db(sigma0: np.ndarray) -> np.ndarray:
    """10 log10(sigma0); NaN where sigma0 is not positive or NaN."""
    sigma0 = np.asarray(sigma0, dtype=np.float32)
    out = np.full(sigma0.shape, np.nan, dtype=np.float32)
    ok = sigma0 > 0
    out[ok] = 10.0 * np.log10(sigma0[ok])
    return out


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """10 ** (dB / 10); NaN stays NaN."""
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


def encode_prepared(sigma0: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Encode linear sigma0 (NaN or <= 0 = nodata) as prepared uint16.

    Args:
        sigma0: Linear backscatter.
        out: A uint16 array of ``sigma0``'s shape (any strides) to write the result
            into and return instead of a new one.

    Raises:
        ArgumentError: ``out`` has another shape or dtype.
    """
    sigma0 = np.asarray(sigma0, dtype=np.float32)
    if out is not None and (out.shape != sigma0.shape or out.dtype != np.uint16):
        raise ArgumentError(f"out is {out.dtype} {out.shape}, the encoding needs uint16 "
                            f"{sigma0.shape}", field="out")
    # Every pixel goes through the same float32 passes in place, nodata ones included
    # (their log is NaN or -inf, set to DN 0 before the cast): no boolean gathers and
    # scatters, and the valid pixels get the values of the formula above bit for bit.
    with np.errstate(divide="ignore", invalid="ignore"):
        dn = np.log(sigma0)
    np.clip(dn, S1_LN_MIN, S1_LN_MAX, out=dn)
    dn -= S1_LN_MIN
    dn /= S1_LN_MAX - S1_LN_MIN
    dn *= _STEPS
    np.rint(dn, out=dn)
    dn += 1  # exact: DN - 1 is a whole number up to 65534, well within float32's 2**24
    np.copyto(dn, S1_NODATA, where=~(sigma0 > 0))
    if out is None:
        return dn.astype(np.uint16)
    # Whole numbers 0..65535: the cast is exact. Band by band: into a channels-last
    # array, numpy's copy of the whole would run along the short channel axis.
    for band, values in zip(out.reshape(-1, *out.shape[-2:]), dn.reshape(-1, *dn.shape[-2:]),
                            strict=True) if out.ndim >= 2 else [(out, dn)]:
        np.copyto(band, values, casting="unsafe")
    return out


def decode_prepared(dn: np.ndarray) -> np.ndarray:
    """Decode prepared values (uint16, or float with NaN after resampling) to linear sigma0."""
    dn = np.asarray(dn, dtype=np.float32)
    out = np.full(dn.shape, np.nan, dtype=np.float32)
    ok = np.isfinite(dn) & (dn >= 1)
    ln = (dn[ok] - 1.0) / _STEPS * (S1_LN_MAX - S1_LN_MIN) + S1_LN_MIN
    out[ok] = np.exp(ln)
    return out
