"""S1Tiling reader: names, pairs and stacks, dB, prepared encoding."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from decloud.errors import SuspectValuesError
from decloud.products import S1Product, open_product, s1tiling
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


def test_file_checks_run_once_per_file_version(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / S1_VV.name
    shutil.copy(S1_VV, path)
    checks: list[Path] = []
    real_check = s1tiling.check_linear_sample

    def counting_check(src: object, checked: Path, nodata: float | None, size: int = 64) -> None:
        checks.append(checked)
        real_check(src, checked, nodata, size=size)

    monkeypatch.setattr(s1tiling, "check_linear_sample", counting_check)
    first = S1Product.from_files([path])
    second = S1Product.from_files([path])
    assert checks == [path]  # the unchanged file is neither opened nor sampled again
    assert second.bands == first.bands and second.encoding == first.encoding == "linear"
    # The same name rewritten with dB values (a new size/mtime) is checked and refused.
    with rasterio.open(S1_VV) as src:
        profile, linear = src.profile, src.read(1)
    db = np.where(linear > 0, 10 * np.log10(np.maximum(linear, 1e-12)), -9999.0)
    profile.update(nodata=-9999.0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(db.astype(profile["dtype"]), 1)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(SuspectValuesError):
        S1Product.from_files([path])
    assert checks == [path, path]


def test_linear_check_samples_the_smallest_overview(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    linear = rng.uniform(0.001, 0.5, size=(512, 512)).astype(np.float32)
    profile = {"driver": "GTiff", "width": 512, "height": 512, "count": 1, "dtype": "float32",
               "crs": "EPSG:32629", "transform": from_origin(500000, 6000000, 10, 10),
               "nodata": 0.0, "tiled": True, "blockxsize": 256, "blockysize": 256}
    good = tmp_path / "good" / S1_VV.name
    good.parent.mkdir()
    with rasterio.open(good, "w", **profile) as dst:
        dst.write(linear, 1)
        dst.build_overviews([2, 4, 8], Resampling.average)
    assert S1Product.from_files([good]).encoding == "linear"
    # Overviews of dB values under full-resolution linear ones: only a check that reads
    # the overview sees the negative values, so this shows which sample is read.
    bad = tmp_path / "bad" / S1_VV.name
    bad.parent.mkdir()
    with rasterio.open(bad, "w", **profile) as dst:
        dst.write(10 * np.log10(linear), 1)
        dst.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(bad, "r+") as dst:
        dst.write(linear, 1)
    with rasterio.open(bad) as src:
        assert src.overviews(1) == [2, 4, 8] and (src.read(1) > 0).all()
    with pytest.raises(SuspectValuesError):
        S1Product.from_files([bad])
