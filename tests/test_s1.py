"""The prepared uint16 S1 encoding and dB conversions."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from decloud.constants import S1_LN_MAX, S1_LN_MIN
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
