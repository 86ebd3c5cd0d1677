"""Aligned stacks: files, encodings, values against the products they come from."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio

from decloud.archive import Archive
from decloud.constants import S2_BANDS, MaskClass
from decloud.errors import MissingBandError, OutputExistsError
from decloud.keys import encode_s2
from decloud.s1 import decode_prepared, linear_to_db
from decloud.stack import build_stack
from tests.conftest import ARCHIVE


@pytest.fixture(scope="module")
def archive() -> Archive:
    return Archive.from_root(ARCHIVE)


def test_s1_s2_stack(archive: Archive, tmp_path: Path) -> None:
    result = build_stack(archive, "T29UPU", date(2017, 6, 17), tmp_path, window_size=64)
    folder = tmp_path / "T29UPU_20170617"
    assert result.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "s1.tif", "s1_false_colour.png", "s2.tif", "s2_mask.tif", "s2_rgb.png", "stack.json"]
    with rasterio.open(folder / "s2.tif") as src:
        assert src.descriptions == S2_BANDS and src.dtypes[0] == "int16"
        s2 = src.read()
    expected = encode_s2(result.s2.read(list(S2_BANDS)))
    np.testing.assert_array_equal(s2, expected)  # windows of 64 give the whole-image answer
    with rasterio.open(folder / "s1.tif") as src:
        vv_db = linear_to_db(decode_prepared(src.read(1)))
    assert result.s1 is not None
    np.testing.assert_allclose(vv_db, result.s1.read(["VV"])[0], atol=0.01)
    with rasterio.open(folder / "s2_mask.tif") as src:
        mask = src.read(1)
    assert (mask[s2[0] == -10000] == MaskClass.NODATA).all()
    manifest = json.loads((folder / "stack.json").read_text())
    assert manifest["s1"]["gap_hours"] == pytest.approx(4.77, abs=0.01)
    assert manifest["s2"]["mask_origin"] == "SCL"


def test_dem_stack_at_20m(archive: Archive, tmp_path: Path) -> None:
    result = build_stack(archive, "T33TVM", date(2015, 9, 9), tmp_path, resolution=20.0)
    assert "dem" in result.files and "s1" not in result.files
    with rasterio.open(result.files["dem"]) as src:
        assert src.res == (20.0, 20.0) and src.shape == (50, 50)
        assert 600 < src.read(1).mean() < 900


def test_missing_band_and_existing_output(archive: Archive, tmp_path: Path) -> None:
    with pytest.raises(MissingBandError, match="B02"):
        build_stack(archive, "T31UFS", date(2023, 4, 15), tmp_path, bands=("B02", "B04"))
    # By default the product's bands, which must be a whole set: this one has B04, B08
    # and B11 only.
    with pytest.raises(MissingBandError, match="missing: B02, B03"):
        build_stack(archive, "T31UFS", date(2023, 4, 15), tmp_path)
    build_stack(archive, "T31UFS", date(2023, 4, 15), tmp_path, bands=("B04", "B08", "B11"))
    with pytest.raises(OutputExistsError):
        build_stack(archive, "T31UFS", date(2023, 4, 15), tmp_path, bands=("B04",))
    build_stack(archive, "T31UFS", date(2023, 4, 15), tmp_path, bands=("B04",), overwrite=True)
    with rasterio.open(tmp_path / "T31UFS_20230415" / "s2.tif") as src:
        assert src.count == 1
