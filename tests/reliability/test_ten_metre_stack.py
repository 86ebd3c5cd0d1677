"""``stack`` of products with only the 10 m bands: the four bands by default, no 20 m band.

A product with all ten bands stacks all ten; one with part of a set (a deleted band
file) is an error naming the missing bands, not a stack quietly without them.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from decloud.archive import Archive
from decloud.cli.main import cli
from decloud.constants import S2_10M_BANDS, S2_BANDS
from decloud.errors import MissingBandError
from decloud.keys import encode_s2
from decloud.stack import build_stack

DAY = "2015-07-11"
TWENTY = ("*_B5.tif", "*_B6.tif", "*_B7.tif", "*_B8A.tif", "*_B11.tif", "*_B12.tif",
          "MASKS/*_CLM_*.tif")


def _drop(product: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in product.glob(pattern):
            path.unlink()


def test_a_ten_metre_product_stacks_its_four_bands(theia_copy: Path, tmp_path: Path) -> None:
    _drop(theia_copy, TWENTY)
    out = tmp_path / "out"
    ran = CliRunner().invoke(cli, ["stack", "--s2-root", str(theia_copy.parent), "--tile",
                                   "T33TVM", "--date", DAY, "--out", str(out)])
    # Before: MissingBandError for B05, the default asked for ten bands.
    assert ran.exit_code == 0, ran.output
    folder = out / "T33TVM_20150711"
    with rasterio.open(folder / "s2.tif") as src:
        assert src.descriptions == S2_10M_BANDS
        stacked = src.read()
    manifest = json.loads((folder / "stack.json").read_text())
    assert manifest["s2"]["bands"] == list(S2_10M_BANDS)
    assert manifest["s2"]["mask_origin"] == "computed-10m"
    product = Archive.scan(theia_copy.parent).s2[0]
    np.testing.assert_array_equal(stacked, encode_s2(product.read(list(S2_10M_BANDS))))


def test_a_full_product_stacks_all_ten(theia_copy: Path, tmp_path: Path) -> None:
    result = build_stack(Archive.scan(theia_copy.parent), "T33TVM",
                         date(2015, 7, 11), tmp_path)
    assert result.bands == list(S2_BANDS)


def test_a_product_missing_one_band_is_an_error(theia_copy: Path, tmp_path: Path) -> None:
    _drop(theia_copy, ("*_FRE_B8A.tif",))
    out = tmp_path / "out"
    with pytest.raises(MissingBandError, match="missing: B8A") as caught:
        build_stack(Archive.scan(theia_copy.parent), "T33TVM",
                    date(2015, 7, 11), out)
    assert caught.value.path == str(theia_copy) and not out.exists()
