"""S1 values are sanity-checked: a dB file under a linear S1Tiling name is refused or read as dB."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from decloud.archive import Archive
from decloud.errors import ProductFormatError, SuspectValuesError
from decloud.products import S1Product, open_product
from tests.conftest import S1_STACK, S1_VH, S1_VV


def _as_db(src_path: Path, dst_path: Path, *, unit: str | None = None) -> np.ndarray:
    """Write the dB version of a linear S1 file under ``dst_path``; return the dB values."""
    with rasterio.open(src_path) as src:
        profile = src.profile
        linear = src.read(1)
    valid = linear > 0
    db = np.full(linear.shape, -9999.0, np.float32)
    db[valid] = 10 * np.log10(linear[valid])
    profile.update(nodata=-9999.0)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(db, 1)
        if unit is not None:
            dst.set_band_unit(1, unit)
    return np.where(valid, db, np.nan)


def test_db_file_under_a_linear_name_is_refused(tmp_path: Path) -> None:
    vv = tmp_path / S1_VV.name
    db = _as_db(S1_VV, vv)
    assert np.mean(db[np.isfinite(db)] < 0) > 0.9  # real backscatter in dB: mostly negative
    with pytest.raises(SuspectValuesError) as info:
        open_product(vv)
    assert info.value.path == str(vv)
    assert "cannot be linear sigma0" in str(info.value) and "dB" in str(info.value)


def test_scan_skips_the_db_file_and_keeps_the_others(tmp_path: Path) -> None:
    root = tmp_path / "S1"
    root.mkdir()
    _as_db(S1_VV, root / S1_VV.name)
    shutil.copy(S1_VH, root / S1_VH.name)
    shutil.copy(S1_STACK, root / S1_STACK.name)
    archive = Archive.scan(s1_root=root)
    # The problem names the VV file (not its VH twin, sorted first); the pair is dropped.
    assert [p.path for p in archive.problems] == [root / S1_VV.name]
    assert "negative" in archive.problems[0].reason
    assert [p.name for p in archive.s1] == [S1_STACK.name]


def test_db_file_that_says_so_is_read_as_db(tmp_path: Path) -> None:
    vv = tmp_path / S1_VV.name
    db = _as_db(S1_VV, vv, unit="dB")
    image = open_product(vv)
    assert isinstance(image, S1Product) and image.encoding == "db"
    reference = open_product(S1_VV).read(["VV"])[0]  # dB from the linear original
    got = image.read(["VV"])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(reference))
    np.testing.assert_allclose(got[~np.isnan(got)], reference[~np.isnan(got)], atol=1e-4)
    np.testing.assert_allclose(got[~np.isnan(got)], db[~np.isnan(got)], atol=1e-4)
    linear = image.read(["VV"], unit="linear")[0]
    assert np.nanmin(linear) > 0


def test_db_values_are_refused_on_read_too(tmp_path: Path) -> None:
    """A product built past the open-time check (or a file replaced since) fails on read."""
    vv = tmp_path / S1_VV.name
    shutil.copy(S1_VV, vv)
    image = open_product(vv)
    _as_db(S1_VV, vv)  # replaced by a dB file after opening
    with pytest.raises(SuspectValuesError) as info:
        image.read(["VV"])
    assert info.value.path == str(vv)


def test_s1_name_with_an_impossible_date(tmp_path: Path) -> None:
    bad = tmp_path / S1_VV.name.replace("20170617", "20170631")
    shutil.copy(S1_VV, bad)
    with pytest.raises(ProductFormatError) as info:
        open_product(bad)
    assert info.value.field == "date" and info.value.path == str(bad)
    archive = Archive.scan(s1_root=tmp_path)
    assert archive.s1 == [] and [p.path for p in archive.problems] == [bad]
