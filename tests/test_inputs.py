"""The input reader: windows equal the whole, one mask nodata, 20 m windows, DEM policy, dt."""

from __future__ import annotations

import functools
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from decloud.archive import Archive
from decloud.constants import DEM_NODATA, S2_NODATA, MaskClass
from decloud.errors import (
    ArgumentError,
    DemCoverageError,
    InputError,
    KeyGrammarError,
    WindowAlignmentError,
)
from decloud.grid import Grid, RasterPool
from decloud.inputs import (
    AcquisitionProducts,
    DemPolicy,
    InputKey,
    InputProducts,
    coarse_window,
    pad_window,
    read_inputs,
)
from decloud.keys import KeyKind, decode_s2, encode_s1, encode_s2, make_key
from decloud.products import Dem, S1Product, S2Product, open_product
from decloud.stack import build_stack
from tests.conftest import ARCHIVE, DEM, S1_VH, S1_VV, SAFE_PB0400, THEIA, THEIA_CLEAR

BANDS10 = ("B02", "B04", "B08")
BANDS20 = ("B8A", "B11")


@functools.cache
def _archive() -> Archive:
    return Archive.from_root(ARCHIVE)


def _s2(path: Path) -> S2Product:
    product = open_product(path)
    assert isinstance(product, S2Product)
    return product


def _keys(acqs: list[str], *, s1: bool = False, dem: bool = False) -> list[InputKey]:
    keys = []
    for acq in acqs:
        keys += [InputKey.of(make_key(KeyKind.S2, acq), BANDS10),
                 InputKey.of(make_key(KeyKind.S2_20M, acq), BANDS20),
                 InputKey.of(make_key(KeyKind.S2_MASK, acq)),
                 InputKey.of(make_key(KeyKind.DT, acq))]
        keys += [InputKey.of(make_key(KeyKind.S1, acq))] if s1 else []
    return keys + ([InputKey.of(make_key(KeyKind.DEM))] if dem else [])


def _theia_case() -> tuple[list[InputKey], InputProducts, Grid]:
    """Two THEIA dates of T33TVM and its DEM (EPSG:4326, warped onto the UTM grid)."""
    first, second = _s2(THEIA), _s2(THEIA_CLEAR)
    products = InputProducts({"t": AcquisitionProducts(first), "tm1": AcquisitionProducts(second)},
                             Dem.open(DEM), reference="t")
    return _keys(["t", "tm1"], dem=True), products, first.grid()


def _safe_case() -> tuple[list[InputKey], InputProducts, Grid]:
    """A SAFE product of T29UPU with its S1 image."""
    s2 = _s2(SAFE_PB0400)
    s1 = _archive().nearest_s1("T29UPU", s2.acquired, timedelta(days=1))
    assert s1 is not None and {Path(f).name for f in s1.files} == {S1_VV.name, S1_VH.name}
    return _keys(["t"], s1=True), InputProducts({"t": AcquisitionProducts(s2, s1)},
                                                reference="t"), s2.grid()


CASES = {"theia_dem": _theia_case, "safe_s1": _safe_case}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("size", "margin"), [(32, 0), (32, 6), (48, 10)])
def test_windows_equal_the_whole(case: str, size: int, margin: int) -> None:
    """Every key of every window (edges included, with a margin) is a cut of one read.

    The whole read covers the grid plus the margin on every side, so that the margin of
    an edge window (past the grid) is compared too.
    """
    keys, products, grid = CASES[case]()
    kinds = {KeyKind(k.kind) for k in keys}
    assert kinds >= {KeyKind.S2, KeyKind.S2_20M, KeyKind.S2_MASK, KeyKind.DT}
    with RasterPool() as pool:
        whole = read_inputs(keys, products, grid, grid.full_window(), margin=margin,
                            dem_policy="partial", pool=pool)
        count = 0
        for core, _ in grid.windows(size):
            got = read_inputs(keys, products, grid, core, margin=margin,
                              dem_policy=DemPolicy.PARTIAL, pool=pool)
            for key in keys:
                if key.kind == KeyKind.DT:
                    np.testing.assert_array_equal(got[key.name], whole[key.name])
                    continue
                k = 2 if key.kind == KeyKind.S2_20M else 1
                row, col = int(core.row_off) // k, int(core.col_off) // k
                h, w = (int(core.height) + 2 * margin) // k, (int(core.width) + 2 * margin) // k
                expected = whole[key.name][row : row + h, col : col + w]
                assert got[key.name].shape == expected.shape, key.name
                np.testing.assert_array_equal(got[key.name], expected, err_msg=key.name)
            count += 1
    assert count == len(list(grid.windows(size)))
    # The whole read holds data: the comparison is not between empty arrays.
    assert (whole[make_key(KeyKind.S2, "t")] != S2_NODATA).mean() > 0.5
    if case == "theia_dem":
        assert (whole["dem"] != DEM_NODATA).mean() > 0.5


def test_output_layout_and_encodings() -> None:
    keys, products, grid = _safe_case()
    window = Window(10, 20, 40, 30)
    got = read_inputs(keys, products, grid, window)
    s2, s1 = products.acquisitions["t"].s2, products.acquisitions["t"].s1
    assert s2 is not None and s1 is not None
    # Channels last, the key's dtype, the key's resolution.
    expected = encode_s2(s2.read(BANDS10, grid, window))
    np.testing.assert_array_equal(got["s2_t"], np.moveaxis(expected, 0, -1))
    assert got["s2_t"].dtype == np.int16 and got["s2_t"].shape == (30, 40, 3)
    expected20 = encode_s2(s2.read(BANDS20, grid.at_resolution(20.0), Window(5, 10, 20, 15)))
    np.testing.assert_array_equal(got["s2_20m_t"], np.moveaxis(expected20, 0, -1))
    expected_s1 = encode_s1(s1.read(("VV", "VH"), grid, window, unit="linear"))
    np.testing.assert_array_equal(got["s1_t"], np.moveaxis(expected_s1, 0, -1))
    assert got["s2_mask_t"].dtype == np.uint8 and got["s2_mask_t"].shape == (30, 40, 1)
    assert got["dt_t"].dtype == np.float32 and got["dt_t"].tolist() == [0.0]
    # Views of channels-first buffers: moving the axis back gives a contiguous array.
    assert np.moveaxis(got["s2_t"], -1, 0).flags.c_contiguous
    assert list(got) == [k.name for k in keys]


# One definition of S2 mask nodata ----------------------------------------------------


def _blank(path: str, rows: slice, cols: slice) -> None:
    """Set a block of a band file to its nodata value (in place, in a copy)."""
    with rasterio.open(path, "r+") as dst:
        data = dst.read(1)
        data[rows, cols] = dst.nodata
        dst.write(data, 1)


@pytest.fixture
def blanked(tmp_path: Path) -> S2Product:
    """A copy of a real THEIA product whose bands have different nodata areas.

    B02 (10 m) loses rows 20-29, B11 (20 m) a 20 m block covering 10 m rows 60-69 and
    columns 40-59, B05 (20 m, read by nobody below) rows 80-89.
    """
    copy = tmp_path / THEIA.name
    shutil.copytree(THEIA, copy)
    product = _s2(copy)
    _blank(product.band("B02").path, slice(20, 30), slice(None))
    _blank(product.band("B11").path, slice(30, 35), slice(20, 30))
    _blank(product.band("B05").path, slice(40, 45), slice(None))
    return product


def test_mask_nodata_is_any_band_read(blanked: S2Product) -> None:
    grid = blanked.grid()
    products = InputProducts({"t": AcquisitionProducts(blanked)})
    keys = [InputKey.of("s2_t", ("B02", "B03")), InputKey.of("s2_20m_t", ("B11",)),
            InputKey.of("s2_mask_t")]
    got = read_inputs(keys, products, grid)
    mask = got["s2_mask_t"][..., 0]
    product_mask = blanked.mask(grid)
    # Brute force: a 10 m pixel is nodata if the product says so, or B02 or B03 at that
    # pixel, or B11 at the 20 m pixel containing it, is nodata.
    b02 = decode_s2(got["s2_t"][..., 0])
    b03 = decode_s2(got["s2_t"][..., 1])
    b11 = decode_s2(got["s2_20m_t"][..., 0])
    expected = product_mask == MaskClass.NODATA
    for r in range(grid.height):
        for c in range(grid.width):
            expected[r, c] |= bool(np.isnan(b02[r, c]) or np.isnan(b03[r, c])
                                   or np.isnan(b11[r // 2, c // 2]))
    np.testing.assert_array_equal(mask == MaskClass.NODATA, expected)
    # The blanked areas differ and each one shows: B02's rows, B11's block.
    assert (mask[20:30] == MaskClass.NODATA).all()
    assert (mask[60:70, 40:60] == MaskClass.NODATA).all()
    assert (mask[40:50, 20:40] != MaskClass.NODATA).any()  # B11 only 60-69
    # B05 is not read: its blank rows are not nodata (unless something else says so).
    assert (mask[80:90] != MaskClass.NODATA).any()
    # Elsewhere the classes are the product's.
    ok = ~expected
    np.testing.assert_array_equal(mask[ok], product_mask[ok])


def test_mask_nodata_without_band_keys_uses_the_finest_band(blanked: S2Product) -> None:
    grid = blanked.grid()
    got = read_inputs([InputKey.of("s2_mask_t")],
                      InputProducts({"t": AcquisitionProducts(blanked)}), grid)
    mask = got["s2_mask_t"][..., 0]
    assert blanked.band_names[0] == "B02"
    assert (mask[20:30] == MaskClass.NODATA).all()
    assert (mask[60:70, 40:60] != MaskClass.NODATA).any()  # B11 not read


def test_stack_and_mask_key_agree(blanked: S2Product, tmp_path: Path) -> None:
    """The stack's mask has the reader's nodata: every stacked band counts."""
    archive = tmp_path / "archive"
    (archive / "S2" / "T33TVM").mkdir(parents=True)
    shutil.move(str(blanked.path), archive / "S2" / "T33TVM" / blanked.path.name)
    result = build_stack(Archive.from_root(archive), "T33TVM", date(2015, 9, 9),
                         tmp_path / "out", window_size=32)
    with rasterio.open(result.files["s2_mask"]) as src:
        mask = src.read(1)
    assert (mask[20:30] == MaskClass.NODATA).all()         # B02
    assert (mask[60:70, 40:60] == MaskClass.NODATA).all()  # B11
    assert (mask[80:90] == MaskClass.NODATA).all()         # B05: stacked, so read


# 20 m windows --------------------------------------------------------------------------


def test_coarse_window() -> None:
    assert coarse_window(Window(-4, 10, 32, 18), 2) == Window(-2, 5, 16, 9)
    assert coarse_window(Window(3, 5, 7, 9), 1) == Window(3, 5, 7, 9)
    for odd in (Window(1, 0, 32, 32), Window(0, 3, 32, 32), Window(0, 0, 31, 32),
                Window(0, 0, 32, 5)):
        with pytest.raises(WindowAlignmentError, match="multiple of 2") as info:
            coarse_window(odd, 2, key="s2_20m_t")
        assert info.value.field == "s2_20m_t"
    assert pad_window(Window(10, 20, 30, 40), 3) == Window(7, 17, 36, 46)
    with pytest.raises(WindowAlignmentError):
        pad_window(Window(0, 0, 1, 1), -1)


def test_odd_windows_refused_for_20m_keys_only() -> None:
    keys, products, grid = _safe_case()
    with pytest.raises(WindowAlignmentError) as info:
        read_inputs(keys, products, grid, Window(1, 0, 32, 32))
    assert info.value.field == "s2_20m_t"
    with pytest.raises(WindowAlignmentError):
        read_inputs(keys, products, grid, Window(0, 0, 32, 32), margin=3)
    ten = [k for k in keys if k.kind != KeyKind.S2_20M]
    got = read_inputs(ten, products, grid, Window(1, 3, 31, 17), margin=3)
    assert got["s2_t"].shape == (23, 37, 3)


def test_20m_stack_grid() -> None:
    """Keys at the grid's own resolution (a 20 m stack) read with factor 1."""
    s2 = _s2(THEIA)
    grid = s2.grid(20.0)
    keys = [InputKey.of("s2", ("B02", "B11"), 20.0), InputKey.of("s2_mask", resolution=20.0)]
    got = read_inputs(keys, InputProducts({None: AcquisitionProducts(s2)}), grid,
                      Window(3, 5, 11, 13))
    expected = encode_s2(s2.read(("B02", "B11"), grid, Window(3, 5, 11, 13)))
    np.testing.assert_array_equal(got["s2"], np.moveaxis(expected, 0, -1))


# DEM policy -----------------------------------------------------------------------------


def test_dem_policy() -> None:
    s2 = _s2(THEIA)
    grid = s2.grid()
    products = InputProducts({}, Dem.open(DEM))
    keys = [InputKey.of("dem")]
    inside = Window(10, 10, 40, 40)
    required = read_inputs(keys, products, grid, inside)["dem"]
    partial = read_inputs(keys, products, grid, inside, dem_policy="partial")["dem"]
    np.testing.assert_array_equal(required, partial)
    assert (required != DEM_NODATA).all()
    far = Window(5000, 5000, 20, 20)
    with pytest.raises(DemCoverageError) as info:
        read_inputs(keys, products, grid, far)
    assert info.value.path == str(DEM)
    assert (read_inputs(keys, products, grid, far, dem_policy="partial")["dem"]
            == DEM_NODATA).all()
    with pytest.raises(ArgumentError, match="policy"):
        Dem.open(DEM).read(grid, inside, policy="sometimes")
    # Half in, half out: the covered half has values, the rest is nodata.
    edge = read_inputs(keys, products, grid, Window(60, 0, 400, 20),
                       dem_policy=DemPolicy.PARTIAL)["dem"][..., 0]
    assert (edge[:, :20] != DEM_NODATA).all() and (edge[:, -20:] == DEM_NODATA).all()


# dt offsets and refusals -------------------------------------------------------------------


def test_dt_offsets() -> None:
    first, second = _s2(THEIA), _s2(THEIA_CLEAR)
    s1 = _archive().nearest_s1("T29UPU", datetime(2017, 6, 17, tzinfo=UTC), timedelta(days=1))
    assert isinstance(s1, S1Product)
    products = InputProducts({"t": AcquisitionProducts(first),
                              "tm1": AcquisitionProducts(second),
                              "s1only": AcquisitionProducts(None, s1),
                              "none": AcquisitionProducts()}, reference="t")
    keys = [InputKey.of(f"dt_{a}") for a in ("t", "tm1", "s1only", "none")]
    got = read_inputs(keys, products, first.grid(), Window(0, 0, 2, 2))
    days = (second.acquired - first.acquired).total_seconds() / 86400
    assert got["dt_t"].tolist() == [0.0]
    assert got["dt_tm1"][0] == pytest.approx(days) and days < -50
    assert got["dt_s1only"][0] == pytest.approx(
        (s1.acquired - first.acquired).total_seconds() / 86400)
    assert np.isnan(got["dt_none"][0])
    with pytest.raises(InputError, match="reference"):
        read_inputs(keys, InputProducts(products.acquisitions), first.grid())


def test_refusals() -> None:
    _, products, grid = _safe_case()
    with pytest.raises(InputError, match="no products for acquisition 'tp1'") as info:
        read_inputs([InputKey.of("s2_tp1")], products, grid)
    assert info.value.field == "s2_tp1"
    with pytest.raises(InputError, match="no S1"):
        read_inputs([InputKey.of("s1_t")],
                    InputProducts({"t": AcquisitionProducts(products.acquisitions["t"].s2)}),
                    grid)
    with pytest.raises(InputError, match="no DEM"):
        read_inputs([InputKey.of("dem")], products, grid)
    with pytest.raises(InputError, match="whole multiple"):
        read_inputs([InputKey.of("s2_t", resolution=15.0)], products, grid)
    with pytest.raises(InputError, match="as coarse"):
        read_inputs([InputKey.of("s2_t", ("B04",)), InputKey.of("s2_mask_t", resolution=20.0)],
                    products, grid, Window(0, 0, 8, 8))
    with pytest.raises(KeyGrammarError):
        InputKey.of("s2_t_x")


def test_stored_integers_are_their_s2_encoding_for_every_int16(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reason the reader may skip the float round trip of THEIA-stored bands.

    Every int16 value, decoded as THEIA's reflectance (x 1/10000, nodata -10000, through
    the compiled loops and the numpy path) and encoded back, is itself, but for values
    below the nodata, which encode as -9999.
    """
    import decloud.grid
    from decloud.grid import RasterKind, read_on_grid

    values = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16).reshape(256, 256)
    grid = Grid("EPSG:32633", rasterio.Affine(10, 0, 400000, 0, -10, 5000000), 256, 256)
    path = tmp_path / "all.tif"
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1,
                       dtype="int16", crs=grid.crs, transform=grid.transform,
                       nodata=S2_NODATA) as dst:
        dst.write(values, 1)
    expected = np.where(values < S2_NODATA, S2_NODATA + 1, values)
    stored = read_on_grid(path, grid, kind=RasterKind.MASK)[0]
    np.testing.assert_array_equal(stored, values)
    for kernels in (decloud.grid._kernels, None):
        monkeypatch.setattr(decloud.grid, "_kernels", kernels)
        reflectance = read_on_grid(path, grid, scale=1 / 10000)[0]
        np.testing.assert_array_equal(encode_s2(reflectance), expected)


@pytest.fixture
def dn_values(tmp_path: Path) -> S2Product:
    """A copy of a real THEIA product whose B02 and B11 hold random int16 DN.

    With the edge cases of the encoding: below the nodata, the nodata, just above it,
    the int16 extremes.
    """
    copy = tmp_path / THEIA.name
    shutil.copytree(THEIA, copy)
    product = _s2(copy)
    rng = np.random.default_rng(3)
    special = np.array([-32768, -10001, -10000, -9999, -1, 0, 1, 32767], np.int16)
    for band in ("B02", "B11"):
        with rasterio.open(product.band(band).path, "r+") as dst:
            data = rng.integers(-32768, 32768, dst.shape, dtype=np.int16)
            data[rng.random(dst.shape) < 0.2] = S2_NODATA
            data[dst.shape[0] * 7 // 10, 4 : 4 + special.size] = special  # in the window
            dst.write(data, 1)
    return product


def test_stored_encoding_read_straight_equals_the_float_path(
        dn_values: S2Product, monkeypatch: pytest.MonkeyPatch) -> None:
    """THEIA bands read as stored integers (with a pool) equal decode then encode_s2.

    The keys: 10 m and 20 m bands at their resolution (read straight), a 20 m band at
    10 m (resampled: the float path) and the mask that takes their nodata; a window past
    the grid's corner, with a margin.
    """
    import decloud.inputs

    keys = [InputKey.of("s2_t", ("B02", "B04")), InputKey.of("s2_20m_t", ("B11", "B8A")),
            InputKey.of("s2_tm1", ("B02", "B11")), InputKey.of("s2_mask_t"),
            InputKey.of("s2_mask_tm1")]
    products = InputProducts({"t": AcquisitionProducts(dn_values),
                              "tm1": AcquisitionProducts(dn_values)})
    grid = dn_values.grid()
    window = Window(-8, 60, 64, 48)
    encodes = []
    original = decloud.inputs.encode_s2
    monkeypatch.setattr(decloud.inputs, "encode_s2",
                        lambda a: encodes.append(a.shape) or original(a))
    float_path = read_inputs(keys, products, grid, window, margin=4)  # no pool: float path
    assert len(encodes) == 3
    encodes.clear()
    with RasterPool() as pool:
        straight = read_inputs(keys, products, grid, window, margin=4, pool=pool)
    assert encodes == [(2, 56, 72)]  # only s2_tm1, whose B11 is resampled
    for key in keys:
        np.testing.assert_array_equal(straight[key.name], float_path[key.name], key.name)
    s2 = straight["s2_t"]
    assert (s2 == S2_NODATA).any() and (s2 == S2_NODATA + 1).any() and (s2 == 32767).any()


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_arrays_get_the_same_values(case: str) -> None:
    """Reading into slices of a channels-last batch (as the dataset writer does) gives
    the values of a plain read, in those very arrays, edge windows included."""
    keys, products, grid = CASES[case]()
    with RasterPool() as pool:
        for window in (Window(10, 20, 40, 30), Window(grid.width - 16, -8, 32, 32)):
            plain = read_inputs(keys, products, grid, window, dem_policy="partial", pool=pool)
            # Batches of two samples, filled with garbage: every pixel must be written.
            batches = {k: np.full((2, *a.shape), 7, a.dtype) for k, a in plain.items()}
            dests = {k: b[1] for k, b in batches.items()}
            got = read_inputs(keys, products, grid, window, dem_policy="partial", pool=pool,
                              out=dests)
            for key in keys:
                assert got[key.name] is dests[key.name], key.name
                np.testing.assert_array_equal(batches[key.name][1], plain[key.name],
                                              err_msg=key.name)
                assert (batches[key.name][0] == 7).all(), key.name
    # The in-place S2 read is exercised (THEIA stores the s2 encoding) and sees nodata.
    if case == "theia_dem":
        assert (plain["s2_t"] == S2_NODATA).any() and (plain["s2_t"] != S2_NODATA).any()


def test_out_array_of_another_shape_is_refused() -> None:
    keys, products, grid = _theia_case()
    window = Window(0, 0, 16, 16)
    for key in ("s2_t", "s2_mask_t", "dem"):
        plain = read_inputs(keys, products, grid, window, dem_policy="partial")[key]
        wrong = np.zeros((plain.shape[0] + 2, *plain.shape[1:]), plain.dtype)
        with pytest.raises(InputError, match="out array"):
            read_inputs(keys, products, grid, window, dem_policy="partial", out={key: wrong})


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 6, 8, 12])
def test_any_band_equal_in_both_layouts(channels: int) -> None:
    from decloud.inputs import _any_band_equal

    rng = np.random.default_rng(channels)
    batch = rng.integers(-3, 3, (2, 9, 11, channels), dtype=np.int16)
    strided = np.moveaxis(batch[1], -1, 0)  # a channels-last sample, seen (C, H, W)
    expected = np.zeros((9, 11), bool)
    for c in range(channels):  # brute force
        expected |= batch[1, :, :, c] == -3
    np.testing.assert_array_equal(_any_band_equal(strided, -3), expected)
    np.testing.assert_array_equal(_any_band_equal(np.ascontiguousarray(strided), -3), expected)
