"""The prepared uint16 S1 encoding and dB conversions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from decloud.constants import S1_LN_MAX, S1_LN_MIN
from decloud.errors import ArgumentError
from decloud.s1 import db_to_linear, decode_prepared, encode_prepared, linear_to_db


def test_db_round_trip() -> None:
    sigma0 = np.array([1e-3, 0.01, 0.1, 1.0], np.float32)
    np.testing.assert_allclose(linear_to_db(sigma0), [-30, -20, -10, 0], atol=1e-5)
    np.testing.assert_allclose(db_to_linear(linear_to_db(sigma0)), sigma0, rtol=1e-5)
    assert np.isnan(linear_to_db(np.array([0.0, -1.0, np.nan]))).all()


def test_prepared_nodata_and_clipping() -> None:
    dn = encode_prepared(np.array([np.nan, 0.0, -1.0, np.exp(-20), np.exp(5)], np.float32))
    assert dn.dtype == np.uint16
    assert dn.tolist() == [0, 0, 0, 1, 65535]
    assert np.isnan(decode_prepared(np.array([0], np.uint16))).all()
    extremes = np.log(decode_prepared(np.array([1, 65535])))
    np.testing.assert_allclose(extremes, [S1_LN_MIN, S1_LN_MAX], atol=1e-5)


@given(st.floats(min_value=S1_LN_MIN, max_value=S1_LN_MAX))
def test_prepared_round_trip_within_half_a_step(ln: float) -> None:
    sigma0 = np.array([np.exp(ln)], np.float32)
    back = np.log(decode_prepared(encode_prepared(sigma0)))
    step = (S1_LN_MAX - S1_LN_MIN) / 65534
    assert abs(back[0] - np.log(sigma0[0])) <= step / 2 + 1e-5


def _gathered_encoding(sigma0: np.ndarray) -> np.ndarray:
    """The encoding computed on the valid pixels only (the formula as written)."""
    out = np.zeros(sigma0.shape, np.uint16)
    ok = sigma0 > 0
    ln = np.clip(np.log(sigma0[ok]), S1_LN_MIN, S1_LN_MAX)
    out[ok] = 1 + np.rint((ln - S1_LN_MIN) / (S1_LN_MAX - S1_LN_MIN) * 65534.0).astype(np.uint16)
    return out


def test_prepared_equals_the_gathered_formula_bit_for_bit() -> None:
    # A sweep of float32 bit patterns (every sign, exponent, NaN and inf) and typical
    # backscatter values.
    patterns = np.arange(0, 2**32, 9973, dtype=np.uint64).astype(np.uint32).view(np.float32)
    typical = np.random.default_rng(0).lognormal(-3, 2, 100_000).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, np.exp(-10), np.exp(3)],
                       np.float32)
    sigma0 = np.concatenate([patterns, typical, special])
    with np.errstate(invalid="ignore"):
        expected = _gathered_encoding(sigma0)
    np.testing.assert_array_equal(encode_prepared(sigma0), expected)


def test_prepared_into_out() -> None:
    sigma0 = np.random.default_rng(1).lognormal(-3, 2, (2, 5, 7)).astype(np.float32)
    sigma0[0, 1, 2] = np.nan
    batch = np.full((3, 5, 7, 2), 9, np.uint16)
    view = np.moveaxis(batch[1], -1, 0)  # strided, as a dataset shard's sample
    assert encode_prepared(sigma0, out=view) is view
    np.testing.assert_array_equal(view, encode_prepared(sigma0))
    assert (batch[0] == 9).all() and (batch[2] == 9).all()
    flat = np.zeros(sigma0.size, np.uint16)
    encode_prepared(sigma0.ravel(), out=flat)
    np.testing.assert_array_equal(flat, encode_prepared(sigma0).ravel())
    with pytest.raises(ArgumentError, match="out"):
        encode_prepared(sigma0, out=np.zeros((2, 5, 7), np.int16))
