"""S1Tiling reader: names, pairs and stacks, dB, prepared encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio

from decloud.products import S1Product, open_product
from decloud.products.s1tiling import group_s1_files, parse_s1_name
from decloud.s1 import PREPARED_ENCODING_TAG, encode_prepared
from tests.conftest import ARCHIVE, S1_STACK, S1_VH, S1_VV


def test_parse_name() -> None:
    fields = parse_s1_name(Path("s1b_31TEJ_vh_ASC_030_20200102txxxxxx.tif"))
    assert fields is not None
    assert fields["platform"] == "S1B" and fields["tile"] == "T31TEJ"
    assert fields["pass_direction"] == "ASC" and fields["relative_orbit"] == 30
    assert fields["acquired"] == datetime(2020, 1, 2, tzinfo=UTC)
    assert parse_s1_name(Path("s1a_31TEJ_hh_DES_110_20170101t054437.tif")) is None


def test_pair_is_one_acquisition_in_db() -> None:
    groups = group_s1_files((ARCHIVE / "S1" / "T29UPU").glob("*.tif"))
    assert len(groups) == 1 and len(groups[0]) == 2
    image = S1Product.from_files(groups[0])
    assert image.pass_direction == "DES" and image.relative_orbit == 23
    assert image.name == "s1a_29UPU_vv+vh_DES_023_20170617t064724.tif"
    with rasterio.open(S1_VV) as src:
        sigma0 = src.read(1).astype(np.float64)
    db = image.read(["VV"])[0]
    valid = sigma0 > 0
    np.testing.assert_allclose(db[valid], 10 * np.log10(sigma0[valid]), atol=1e-4)
    assert S1_VH.name in image.files[0]


def test_vvvh_stack() -> None:
    image = open_product(S1_STACK)
    assert isinstance(image, S1Product)
    assert image.bands["VV"].index == 1 and image.bands["VH"].index == 2
    vv, vh = image.read()
    assert np.nanmean(vv) > np.nanmean(vh)  # co-polarised backscatter is the stronger


def test_prepared_encoding_is_decoded(tmp_path: Path) -> None:
    with rasterio.open(S1_VV) as src:
        profile, sigma0 = src.profile, src.read(1)
    profile.update(dtype="uint16", nodata=0)
    path = tmp_path / S1_VV.name
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(encode_prepared(sigma0), 1)
        dst.update_tags(**{PREPARED_ENCODING_TAG: "ln_clip"})
    image = open_product(path)
    assert isinstance(image, S1Product) and image.encoding == "prepared"
    np.testing.assert_allclose(image.read(["VV"])[0], 10 * np.log10(sigma0), atol=0.01)
