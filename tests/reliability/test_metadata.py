"""Broken metadata: a typed error naming the file and the element, never silent wrong data.

Each case breaks one thing in a private copy of a real fixture and checks the error
type, that the message names the metadata file and the element, and that an archive
scan skips only that product and reports it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from decloud.archive import Archive
from decloud.errors import MetadataError, ProductFormatError
from decloud.products import open_product
from tests.conftest import SAFE_PB0205, SAFE_PB0400, THEIA_CLEAR
from tests.reliability.conftest import edit_text

MTD = "MTD_MSIL2A.xml"


def _drop_offsets(safe: Path) -> None:
    path = safe / MTD
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"\s*<BOA_ADD_OFFSET_VALUES_LIST>.*</BOA_ADD_OFFSET_VALUES_LIST>",
                           "", text, flags=re.DOTALL), encoding="utf-8")


def _drop_b04_offset(safe: Path) -> None:
    edit_text(safe / MTD, '<BOA_ADD_OFFSET band_id="3">-1000</BOA_ADD_OFFSET>', "")


def _latin1(safe: Path) -> None:
    # A metadata file re-saved by a tool in Latin-1 while still declaring UTF-8.
    path = safe / MTD
    text = path.read_text(encoding="utf-8").replace("INS-NOBS", "Prise de vue no\u00e9")
    path.write_bytes(text.encode("latin-1"))


def _truncated(safe: Path) -> None:
    path = safe / MTD
    path.write_bytes(path.read_bytes()[:1500])


# case -> (how to break the SAFE copy, element the error must name, words it must contain)
SAFE_CASES: dict[str, tuple[Callable[[Path], None], str | None, str]] = {
    "offsets missing": (_drop_offsets, "BOA_ADD_OFFSET", "0.1 too bright"),
    "one band's offset missing": (_drop_b04_offset, "BOA_ADD_OFFSET", "B04"),
    "quantification zero": (
        lambda s: edit_text(s / MTD, 'unit="none">10000<', 'unit="none">0<'),
        "BOA_QUANTIFICATION_VALUE", "is 0"),
    "quantification not a number": (
        lambda s: edit_text(s / MTD, 'unit="none">10000<', 'unit="none">10 000<'),
        "BOA_QUANTIFICATION_VALUE", "not a number"),
    "quantification missing": (
        lambda s: edit_text(s / MTD, '<BOA_QUANTIFICATION_VALUE unit="none">10000'
                                     "</BOA_QUANTIFICATION_VALUE>", ""),
        "BOA_QUANTIFICATION_VALUE", "missing"),
    "offset not a number": (
        lambda s: edit_text(s / MTD, 'band_id="3">-1000<', 'band_id="3">-1O00<'),
        "BOA_ADD_OFFSET[band_id=3]", "not a number"),
    "start time not a date": (
        lambda s: edit_text(s / MTD, "<PRODUCT_START_TIME>2017-06-17T11:33:21.026Z",
                            "<PRODUCT_START_TIME>2017-06-31T11:33:21.026Z"),
        "PRODUCT_START_TIME", "not an ISO 8601"),
    "nodata not a number": (
        lambda s: edit_text(s / MTD, "<SPECIAL_VALUE_INDEX>0<", "<SPECIAL_VALUE_INDEX>none<"),
        "SPECIAL_VALUE_INDEX", "not a number"),
    "not UTF-8": (_latin1, None, "not valid XML"),
    "truncated metadata": (_truncated, None, "not valid XML"),
}


@pytest.mark.parametrize("case", list(SAFE_CASES))
def test_broken_safe_metadata_is_a_typed_error(case: str, safe_copy: Path) -> None:
    breaker, element, words = SAFE_CASES[case]
    breaker(safe_copy)
    with pytest.raises(MetadataError) as info:
        open_product(safe_copy)
    err = info.value
    assert err.path == f"{safe_copy}/{MTD}"
    assert err.field == element
    assert words in str(err)
    assert MTD in str(err)


@pytest.mark.parametrize("case", list(SAFE_CASES))
def test_scan_skips_the_broken_product_and_reports_it(case: str, safe_copy: Path) -> None:
    SAFE_CASES[case][0](safe_copy)
    shutil.copytree(SAFE_PB0205, safe_copy.parent / SAFE_PB0205.name)
    archive = Archive.scan(safe_copy.parent)
    assert [p.name for p in archive.s2] == [SAFE_PB0205.name]  # the good one is kept
    assert [p.path for p in archive.problems] == [safe_copy]
    assert MTD in archive.problems[0].reason
    assert SAFE_CASES[case][2] in archive.problems[0].reason


def test_missing_offsets_before_and_after(safe_copy: Path) -> None:
    """Before: read with offset 0 (every pixel 0.1 too bright). After: refused."""
    reference = open_product(SAFE_PB0400).read(["B04"])
    with rasterio.open(next(SAFE_PB0400.rglob("*_B04_10m.jp2"))) as src:
        dn = src.read(1).astype(np.float64)
    valid = dn > 0
    # The reader applies the declared offset: (DN - 1000) / 10000, checked with GDAL.
    np.testing.assert_allclose(reference[0][valid], (dn[valid] - 1000) / 10000, atol=1e-6)
    _drop_offsets(safe_copy)
    with pytest.raises(MetadataError, match="BOA_ADD_OFFSET"):
        open_product(safe_copy)


def test_products_before_baseline_04_have_no_offset() -> None:
    product = open_product(SAFE_PB0205)
    assert {b.offset for b in product.bands.values()} == {0.0}


def test_tile_sensing_time_is_the_acquisition_time(safe_copy: Path) -> None:
    granule = next((safe_copy / "GRANULE").iterdir())
    (granule / "MTD_TL.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<n1:Level-2A_Tile_ID xmlns:n1="x"><n1:General_Info>'
        "<SENSING_TIME>2017-06-17T11:35:31.456Z</SENSING_TIME></n1:General_Info>"
        "</n1:Level-2A_Tile_ID>\n", encoding="utf-8")
    product = open_product(safe_copy)
    assert product.acquired.isoformat() == "2017-06-17T11:35:31.456000+00:00"
    # Without MTD_TL.xml: the datatake start, PRODUCT_START_TIME.
    assert open_product(SAFE_PB0400).acquired.isoformat() == "2017-06-17T11:33:21.026000+00:00"


def test_bad_tile_sensing_time(safe_copy: Path) -> None:
    granule = next((safe_copy / "GRANULE").iterdir())
    (granule / "MTD_TL.xml").write_text(
        "<Level-2A_Tile_ID><SENSING_TIME>yesterday</SENSING_TIME></Level-2A_Tile_ID>",
        encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        open_product(safe_copy)
    assert info.value.field == "SENSING_TIME" and "MTD_TL.xml" in str(info.value)


def test_broken_theia_metadata(theia_copy: Path) -> None:
    mtd = next(theia_copy.glob("*_MTD_ALL.xml"))
    mtd.write_bytes(mtd.read_bytes()[:200])
    with pytest.raises(MetadataError) as info:
        open_product(theia_copy)
    assert info.value.path == str(mtd)


def test_theia_name_with_an_impossible_date(tmp_path: Path) -> None:
    bad = tmp_path / THEIA_CLEAR.name.replace("20150711", "20151311")
    shutil.copytree(THEIA_CLEAR, bad)
    with pytest.raises(ProductFormatError) as info:
        open_product(bad)
    assert info.value.path == str(bad) and "20151311" in str(info.value)
    archive = Archive.scan(tmp_path)
    assert archive.s2 == [] and [p.path for p in archive.problems] == [bad]


def _stack(tmp_path: Path) -> Path:
    theia = open_product(THEIA_CLEAR)
    grid = theia.grid()
    data = np.rint(theia.read(["B02", "B03"]) * 10000).astype(np.uint16)
    path = tmp_path / "stack.tif"
    with rasterio.open(path, "w", driver="GTiff", width=grid.width, height=grid.height,
                       count=2, dtype="uint16", crs=grid.crs, transform=grid.transform,
                       nodata=0) as dst:
        dst.write(data)
    spec = {"platform": "S2A", "tile": "T33TVM", "acquired": "2015-07-11T10:00:08Z",
            "bands": ["B02", "B03"]}
    path.with_suffix(".yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_sidecar_not_utf8(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    sidecar = stack.with_suffix(".yaml")
    sidecar.write_bytes(sidecar.read_bytes() + "# r\u00e9sum\u00e9\n".encode("latin-1"))
    with pytest.raises(MetadataError) as info:
        open_product(stack)
    assert info.value.path == str(sidecar) and "not UTF-8" in str(info.value)
    archive = Archive.scan(tmp_path)
    assert archive.s2 == [] and [p.path for p in archive.problems] == [stack]


@pytest.mark.parametrize(("value", "words"), [(0, "non-zero"), ("ten", "valid number")])
def test_sidecar_bad_scale(tmp_path: Path, value: object, words: str) -> None:
    stack = _stack(tmp_path)
    sidecar = stack.with_suffix(".yaml")
    spec = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    sidecar.write_text(yaml.safe_dump({**spec, "scale": value}), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        open_product(stack)
    assert info.value.path == str(sidecar) and info.value.field == "scale"
    assert words in str(info.value)


def test_sidecar_bad_date(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    sidecar = stack.with_suffix(".yaml")
    spec = yaml.safe_load(sidecar.read_text(encoding="utf-8"))
    sidecar.write_text(yaml.safe_dump({**spec, "acquired": "2015-02-30T10:00:00Z"}),
                       encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        open_product(stack)
    assert info.value.field == "acquired"
