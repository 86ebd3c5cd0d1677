"""The key grammar and encodings: round trips, refusals, and the table every layer uses."""

from __future__ import annotations

import numpy as np
import pytest

from decloud.constants import S1_NODATA, S2_NODATA, MaskClass
from decloud.errors import KeyGrammarError
from decloud.keys import (
    CLOUD_CLASSES,
    DT_PREFIX,
    KINDS,
    REFERENCE_RESOLUTION,
    KeyKind,
    ParsedKey,
    acquisition_keys,
    check_acquisition,
    decode_s1,
    decode_s2,
    encode_s1,
    encode_s2,
    make_key,
    parse_key,
)
from decloud.s1 import decode_prepared, encode_prepared

ACQS = ["t", "tm1", "tp1", "t0", "target", "a9z", "s2", "dem", "dt"]


@pytest.mark.parametrize("kind", list(KeyKind))
@pytest.mark.parametrize("acq", ACQS)
def test_make_parse_round_trip(kind: KeyKind, acq: str) -> None:
    if kind is KeyKind.DEM:
        assert parse_key(make_key(kind)) == ParsedKey(KeyKind.DEM, None)
        with pytest.raises(KeyGrammarError, match="no acquisition"):
            make_key(kind, acq)
        return
    key = make_key(kind, acq)
    # The key is the kind's value, an underscore and the acquisition, exactly.
    assert key == f"{kind.value}_{acq}"
    assert parse_key(key) == (kind, acq)
    assert parse_key(key).spec is KINDS[kind]


def test_exhaustive_grammar_is_unambiguous() -> None:
    """Every (kind, acquisition) pair gives a distinct key: no key parses two ways."""
    seen: dict[str, tuple[KeyKind, str | None]] = {}
    for kind in KeyKind:
        for acq in [None, *ACQS]:
            try:
                key = make_key(kind, acq)
            except KeyGrammarError:
                continue
            assert key not in seen, (key, seen.get(key), (kind, acq))
            seen[key] = (kind, acq)
            assert tuple(parse_key(key)) == (kind, acq)
    # Stack keys: the per-acquisition kinds without an acquisition.
    assert seen["s2_mask"] == (KeyKind.S2_MASK, None)
    assert seen["s2_20m"] == (KeyKind.S2_20M, None)
    assert seen["s2_dt"] == (KeyKind.S2, "dt")


@pytest.mark.parametrize("bad", [
    "", "s2", "S2_t", "s2_T", "s2__t", "s2_t_", "s2_1t", "s2_20m_1", "dem_t", "dt",
    "s3_t", "s2_mask_mask", "s2_t-1", " s2_t", "mask", "s2_t.tif",
])
def test_parse_refuses(bad: str) -> None:
    if bad == "s2":
        assert parse_key(bad) == (KeyKind.S2, None)
        return
    with pytest.raises(KeyGrammarError) as info:
        parse_key(bad)
    assert info.value.field == bad


@pytest.mark.parametrize(("kind", "acq", "match"), [
    ("s3", "t", "unknown key kind"),
    (KeyKind.S2, "T", "must match"),
    (KeyKind.S2, "t_1", "must match"),
    (KeyKind.S2, "mask", "reserved"),
    (KeyKind.DT, None, "needs an acquisition"),
])
def test_make_refuses(kind: str, acq: str | None, match: str) -> None:
    with pytest.raises(KeyGrammarError, match=match):
        make_key(kind, acq)


def test_check_acquisition() -> None:
    assert check_acquisition("tm1") == "tm1"
    with pytest.raises(KeyGrammarError):
        check_acquisition("1t")


def test_acquisition_keys_order() -> None:
    assert acquisition_keys("t", s2=True, s1=True) == ["s2_t", "s2_20m_t", "s2_mask_t", "s1_t"]
    assert acquisition_keys("t", s2=False, s1=True) == ["s1_t"]
    assert acquisition_keys("t", s2=True) == ["s2_t", "s2_20m_t", "s2_mask_t"]


def test_table() -> None:
    assert set(KINDS) == set(KeyKind)
    assert REFERENCE_RESOLUTION == 10.0
    assert make_key(KeyKind.DT, "t")[:-1] == DT_PREFIX
    assert KINDS[KeyKind.S2_20M].resolution == 2 * REFERENCE_RESOLUTION
    for kind, spec in KINDS.items():
        assert spec.kind is kind
        np.dtype(spec.dtype)  # a valid numpy dtype
        if spec.spatial and kind is not KeyKind.DT:
            # The nodata value is representable in the key's dtype.
            assert np.array(spec.nodata).astype(spec.dtype) == spec.nodata
    assert KINDS[KeyKind.DT].spatial is False
    assert KINDS[KeyKind.DEM].per_acquisition is False
    assert set(CLOUD_CLASSES) == {MaskClass.CLOUD, MaskClass.CIRRUS, MaskClass.SHADOW}


def test_s2_codec() -> None:
    rng = np.random.default_rng(0)
    refl = rng.uniform(-0.5, 1.5, size=(3, 17, 19)).astype(np.float32)
    refl[0, :3] = np.nan
    refl[1, 5, 5] = -2.0      # would encode as nodata: clipped one above it
    refl[2, 6, 6] = 10.0      # beyond int16: clipped to its max
    enc = encode_s2(refl)
    assert enc.dtype == np.int16
    assert (enc[0, :3] == S2_NODATA).all()
    assert enc[1, 5, 5] == S2_NODATA + 1
    assert enc[2, 6, 6] == np.iinfo(np.int16).max
    dec = decode_s2(enc)
    assert dec.dtype == np.float32
    assert np.isnan(dec[0, :3]).all()
    ok = np.isfinite(refl) & (refl > -0.9999) & (refl < 3.2767)
    # Rounding to the nearest 1e-4: at most half a step off.
    np.testing.assert_allclose(dec[ok], refl[ok], atol=0.5e-4 + 1e-7)
    np.testing.assert_array_equal(encode_s2(dec), enc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_s2_encoding_equals_the_masked_formula_to_the_bit(dtype: type) -> None:
    # Reference: the original boolean-mask formula, applied to the finite values only.
    def reference(refl: np.ndarray) -> np.ndarray:
        out = np.full(refl.shape, S2_NODATA, dtype=np.int16)
        ok = np.isfinite(refl)
        out[ok] = np.clip(np.rint(refl[ok] * 10000.0), S2_NODATA + 1, np.iinfo(np.int16).max)
        return out

    rng = np.random.default_rng(1)
    refl = rng.uniform(-5.0, 5.0, size=(4, 33, 29)).astype(dtype)
    flat = refl.reshape(-1)
    picks = rng.choice(flat.size, size=400, replace=False)
    specials = np.array([np.nan, np.inf, -np.inf, 3.2767, 3.27675, -0.99995, -0.99985,
                         0.00005, -0.00005, 0.00015, 1e30, -1e30, np.finfo(dtype).max,
                         np.finfo(dtype).min], dtype=dtype)
    flat[picks] = specials[np.arange(picks.size) % specials.size]
    with np.errstate(over="ignore"):
        expected = reference(refl)
        got = encode_s2(refl)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, expected)
    assert encode_s2(refl[:0]).shape == (0, 33, 29)


def test_s1_codec_is_decloud_s1() -> None:
    assert encode_s1 is encode_prepared
    assert decode_s1 is decode_prepared
    sigma0 = np.array([0.0, np.nan, 1e-3, 0.5, 2.0], dtype=np.float32)
    enc = encode_s1(sigma0)
    assert enc.dtype == np.uint16
    assert list(enc[:2]) == [S1_NODATA, S1_NODATA]
    np.testing.assert_allclose(decode_s1(enc)[2:], sigma0[2:], rtol=2e-4)
