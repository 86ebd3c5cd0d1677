"""``--engine otbtf``: padded per-key VRTs, OTBTF's outputs cropped, masked, re-georeferenced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine

from decloud.constants import S2_NODATA
from decloud.errors import InferenceError, OutputExistsError
from decloud.inference.otbtf import (
    KeyRaster,
    check_output,
    command_sources,
    finish_otbtf,
    otbtf_origin,
    otbtf_output_grid,
    plan_otbtf,
    run_otbtf,
    select_bands,
    stack_key_rasters,
    write_padded_vrt,
)
from decloud.inference.otbtf import _run as run_command
from decloud.keys import encode_s2
from decloud.models import build, get_config
from decloud.models.otbtf import OtbtfCommand, otbtf_settings
from tests.inference.test_otbtf_engine import install_fake_otbtf

CRS = "EPSG:32631"
ORIGIN = (600000.0, 5000000.0)
WIDTH, HEIGHT = 40, 36  # 10 m px
STACK_BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def settings() -> dict[str, Any]:
    """otbtf.json of a small DSen2-CR: S2 10 m and 20 m and S1 in; 10 m and 20 m out."""
    config = get_config("dsen2cr")
    config = config.model_copy(update={"network": config.network.model_copy(
        update={"features": 8, "blocks": 2})})
    return otbtf_settings(build(config)[1], model_dir="/abs/savedmodel")  # margin 8


def write(path: Path, data: np.ndarray, res: float, nodata: float,
          names: list[str] | None = None, origin: tuple[float, float] = ORIGIN) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=CRS, nodata=nodata,
                       transform=Affine(res, 0, origin[0], 0, -res, origin[1])) as dst:
        dst.write(data)
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, KeyRaster]:
    """A 10-band S2 stack (the 10 m key picks 4 bands by name), 20 m S2 and S1.

    Top-left 10 x 10 px (5 x 5 at 20 m): every time-varying input is nodata there;
    rows 20..25: only the 10 m S2 is.
    """
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 6000, (10, HEIGHT, WIDTH)).astype(np.int16)
    s2_20m = rng.integers(0, 6000, (6, HEIGHT // 2, WIDTH // 2)).astype(np.int16)
    s1 = rng.integers(1, 65535, (2, HEIGHT, WIDTH)).astype(np.uint16)
    stack[:, :10, :10] = S2_NODATA
    stack[:, 20:26] = S2_NODATA
    s2_20m[:, :5, :5] = S2_NODATA
    s1[:, :10, :10] = 0
    return {
        "s2_t": KeyRaster(write(tmp_path / "s2.tif", stack, 10, S2_NODATA, STACK_BANDS)),
        "s2_20m_t": KeyRaster(write(tmp_path / "s2_20m.tif", s2_20m, 20, S2_NODATA),
                              bands=(1, 2, 3, 4, 5, 6)),
        "s1_t": KeyRaster(write(tmp_path / "s1.tif", s1, 10, 0)),
    }


def test_bands_by_name_index_or_count(inputs: dict[str, KeyRaster]) -> None:
    names = ["B02", "B03", "B04", "B08"]
    assert select_bands(inputs["s2_t"], names, 4) == (1, 2, 3, 4)
    assert select_bands(inputs["s2_t"], ["B8A", "B02"], 2) == (8, 1)
    assert select_bands(inputs["s1_t"], ["VV", "VH"], 2) == (1, 2)  # no names: all bands
    with pytest.raises(InferenceError, match="name the bands"):
        select_bands(inputs["s2_t"], ["X1", "X2", "X3", "X4"], 4)
    with pytest.raises(InferenceError, match="bands"):
        select_bands(KeyRaster(inputs["s2_t"].path, bands=(1, 11)), names[:2], 2)


def test_key_rasters_of_stacks(tmp_path: Path) -> None:
    _, spec = build(get_config("msop_small"))  # s2 and s1 at t-1, t, t+1, and dem
    s = otbtf_settings(spec, model_dir="/abs/savedmodel")
    stacks = {}
    for acq in ("tm1", "t", "tp1"):
        folder = tmp_path / f"31TCJ_{acq}"
        folder.mkdir()
        stack = np.zeros((10, 4, 4), np.int16)
        write(folder / "s2.tif", stack, 10, S2_NODATA, STACK_BANDS)
        write(folder / "s1.tif", np.ones((2, 4, 4), np.uint16), 10, 0)
        stacks[acq] = folder
    write(tmp_path / "31TCJ_t" / "dem.tif", np.zeros((1, 4, 4), np.float32), 10, -32768)
    rasters = stack_key_rasters(s, stacks)
    assert set(rasters) == set(spec.inputs)
    assert rasters["s2_tm1"].path == tmp_path / "31TCJ_tm1" / "s2.tif"
    assert rasters["s1_tp1"].path == tmp_path / "31TCJ_tp1" / "s1.tif"
    assert rasters["dem"].path == tmp_path / "31TCJ_t" / "dem.tif"
    # The 10-band s2.tif feeds the model's 4 bands, chosen by name.
    assert select_bands(rasters["s2_t"], spec.inputs["s2_t"].bands, 4) == (1, 2, 3, 4)
    with pytest.raises(InferenceError, match="no stack for acquisition 'tp1'"):
        stack_key_rasters(s, {"tm1": stacks["tm1"], "t": stacks["t"]})


def test_padded_vrt(inputs: dict[str, KeyRaster], tmp_path: Path) -> None:
    vrt = tmp_path / "s2_t.vrt"
    write_padded_vrt(inputs["s2_t"], (8, 1), (3, 2, 5, 4), S2_NODATA, vrt)
    with rasterio.open(inputs["s2_t"].path) as src:
        source = src.read([8, 1])
    with rasterio.open(vrt) as src:
        got = src.read()
        assert src.transform == Affine(10, 0, ORIGIN[0] - 30, 0, -10, ORIGIN[1] + 20)
        assert str(src.crs) == CRS
    assert got.shape == (2, HEIGHT + 6, WIDTH + 8) and got.dtype == np.int16
    np.testing.assert_array_equal(got[:, 2:-4, 3:-5], source)
    border = np.ones(got.shape[1:], dtype=bool)
    border[2:-4, 3:-5] = False
    assert np.all(got[:, border] == S2_NODATA)


def test_otbtf_origin_of_a_20m_output() -> None:
    t = Affine(10, 0, 600000, 0, -10, 5000000)
    assert otbtf_origin(t, 1) == (600000, 5000000)
    # Centre of the first 10 m pixel kept as the centre of the first 20 m pixel: 5 m off.
    assert otbtf_origin(t, 2) == (599995, 5000005)


def fake_otbtf_output(path: str, values: np.ndarray, res: float) -> None:
    """What OTBTF writes: float32, whole fields, origin as OTBTF places it."""
    x, y = otbtf_origin(Affine(10, 0, *ORIGIN[:1], 0, -10, ORIGIN[1]), res / 10)
    write(Path(path.split("?")[0]), values.astype(np.float32), res, 0, origin=(x, y))


def observed(inputs: dict[str, KeyRaster], ratio: int) -> np.ndarray:
    """Brute force: an output pixel has data where any time-varying input has one."""
    with rasterio.open(inputs["s2_t"].path) as a, rasterio.open(inputs["s1_t"].path) as b, \
            rasterio.open(inputs["s2_20m_t"].path) as c:
        ten = (a.read([1, 2, 3, 4]) != S2_NODATA).any(0) | (b.read() != 0).any(0)
        twenty = (c.read() != S2_NODATA).any(0)
    h, w = HEIGHT // ratio, WIDTH // ratio
    out = np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            out[i, j] = ten[i * ratio:(i + 1) * ratio, j * ratio:(j + 1) * ratio].any() or \
                twenty[i * ratio // 2, j * ratio // 2]
    return out


def test_plan_and_finish(inputs: dict[str, KeyRaster], tmp_path: Path) -> None:
    s = settings()
    work = tmp_path / "work"
    work.mkdir()
    plan = plan_otbtf(s, inputs, tmp_path / "out.tif", work)
    # One 40 px field covers 40 x 36 px; padded by the margin (8) all round, plus one
    # 20 m pixel on the bottom and right (OTBTF's 20 m output would lose its field).
    assert (plan.margin, plan.efield, plan.fields, plan.padded) == (8, 40, (1, 1), (58, 58))
    with rasterio.open(plan.rasters["s2_20m_t"]) as src:
        assert (src.width, src.height, src.count) == (29, 29, 6)
    assert set(plan.commands) == {"s2_target", "s2_20m_target"}
    args = plan.commands["s2_20m_target"].args
    assert args[args.index("-output.efieldx") + 1] == "20"
    assert args[args.index("-source1.il") + 1] == str(work / "s2_t.vrt")
    rng = np.random.default_rng(1)
    values = {"s2_target": rng.uniform(-10, 6000, (4, 40, 40)),
              "s2_20m_target": rng.uniform(0, 6000, (6, 20, 20))}
    for key, res in (("s2_target", 10), ("s2_20m_target", 20)):
        fake_otbtf_output(plan.commands[key].output, values[key], res)
    counts = finish_otbtf(plan, inputs)
    for key, name, ratio, bands in (("s2_target", "out.tif", 1, STACK_BANDS[:4]),
                                    ("s2_20m_target", "out_20m.tif", 2, STACK_BANDS[4:])):
        assert plan.outputs[key] == tmp_path / name
        h, w = HEIGHT // ratio, WIDTH // ratio
        seen = observed(inputs, ratio)
        expected = encode_s2(values[key][:, :h, :w].astype(np.float32) / 10000)
        expected[:, ~seen] = S2_NODATA
        with rasterio.open(tmp_path / name) as src:
            # decloud's grid, not OTBTF's (5 m off at 20 m).
            assert src.transform == Affine(10 * ratio, 0, ORIGIN[0], 0, -10 * ratio, ORIGIN[1])
            assert (src.width, src.height, src.nodata) == (w, h, S2_NODATA)
            assert list(src.descriptions) == bands and src.dtypes[0] == "int16"
            np.testing.assert_array_equal(src.read(), expected)
    assert counts == {"valid": int(observed(inputs, 1).sum()),
                      "nodata": int((~observed(inputs, 1)).sum())}


def test_inputs_off_the_grid_are_refused(inputs: dict[str, KeyRaster], tmp_path: Path) -> None:
    inputs["s1_t"] = KeyRaster(write(tmp_path / "s1b.tif", np.ones((2, HEIGHT, WIDTH - 2),
                                                                   np.uint16), 10, 0))
    with pytest.raises(InferenceError, match=r"s1_t\]: 38 x 36"):
        plan_otbtf(settings(), inputs, tmp_path / "out.tif", tmp_path)
    with pytest.raises(InferenceError, match="no raster for inputs"):
        plan_otbtf(settings(), {}, tmp_path / "out.tif", tmp_path)


def test_absent_otbtf_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       inputs: dict[str, KeyRaster]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InferenceError, match=r"not on PATH.*docker"):
        run_otbtf(tmp_path, inputs, tmp_path / "out.tif")
    assert not (tmp_path / "out.json").exists()


def test_failure_quotes_the_log_tail(tmp_path: Path) -> None:
    script = "; ".join(f"echo line{i}" for i in range(8)) + "; echo boom >&2; exit 3"
    command = OtbtfCommand("s2_target", ["sh", "-c", script], {}, 16, "x.tif")
    with pytest.raises(InferenceError, match=r"status 3: line4 \| line5 \| line6 \| line7 "
                                             r"\| boom$") as err:
        run_command(command, tmp_path, None)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_run_with_otbtfs_geometry_equals_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               inputs: dict[str, KeyRaster]) -> None:
    """Several fields at 10 m and 20 m through the stand-in equal the whole-image model."""
    install_fake_otbtf(tmp_path, monkeypatch)
    from decloud.models.export import export_savedmodel
    from decloud.models.inference import predict

    config = get_config("dsen2cr")
    config = config.model_copy(update={"network": config.network.model_copy(
        update={"features": 8, "blocks": 2})})
    model, spec = build(config)
    saved = export_savedmodel(model, spec, tmp_path / "savedmodel")
    # 16 px fields: 3 x 3 fields at 10 m, 8 px fields at 20 m, seams inside the scene.
    record = run_otbtf(saved, inputs, tmp_path / "out.tif", efield=16)
    assert record.outputs == {"reflectance": str(tmp_path / "out.tif"),
                              "reflectance_20m": str(tmp_path / "out_20m.tif")}
    assert record.method["model_dir"] == str(saved.resolve())
    assert record.parameters["efield"] == 16 and record.blocks["total"] == 9
    assert json.loads((tmp_path / "out.json").read_text())["grid"]["width"] == WIDTH
    # Reference: the Keras model on the whole inputs padded by the margin with nodata.
    m = 8
    arrays = {}
    for key, raster in inputs.items():
        bands = select_bands(raster, spec.inputs[key].bands, spec.inputs[key].channels)
        with rasterio.open(raster.path) as src:
            data, nodata = src.read(list(bands)), src.nodata
        r = 2 if "20m" in key else 1
        padded = np.pad(data, ((0, 0), (m // r, m // r), (m // r, m // r)),
                        constant_values=nodata)
        arrays[key] = np.moveaxis(padded, 0, -1)[None].astype(np.float32)
    expected = predict(model, spec, arrays)
    for key, name, r in (("s2_target", "out.tif", 1), ("s2_20m_target", "out_20m.tif", 2)):
        c = m // r
        want = encode_s2(np.moveaxis(expected[key][0, c:-c, c:-c], -1, 0) / 10000)
        want[:, ~observed(inputs, r)] = S2_NODATA
        with rasterio.open(tmp_path / name) as src:
            # decloud's grid (OTBTF's 20 m output was 5 m off, checked by check_output).
            assert src.transform == Affine(10 * r, 0, ORIGIN[0], 0, -10 * r, ORIGIN[1])
            got = src.read()
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    with pytest.raises(OutputExistsError, match="exists already"):
        run_otbtf(saved, inputs, tmp_path / "out.tif")


def test_output_off_otbtfs_geometry_is_refused(inputs: dict[str, KeyRaster],
                                               tmp_path: Path) -> None:
    s = settings()
    plan = plan_otbtf(s, inputs, tmp_path / "out.tif", tmp_path)
    command = plan.commands["s2_20m_target"]
    sources = []
    for path, rfield in command_sources(command):
        with rasterio.open(path) as src:
            sources.append((src.transform, src.width, src.height, rfield))
    west, north, width, height = otbtf_output_grid(sources, 20, 2)
    # OTBTF's 20 m origin: 5 m west and north of the input's corner, one whole field.
    assert (west, north, width, height) == (ORIGIN[0] - 5, ORIGIN[1] + 5, 20, 20)
    fake_otbtf_output(command.output, np.zeros((6, 20, 20)), 20)
    check_output(command, 20, 18)
    write(Path(command.output), np.zeros((6, 20, 20), np.float32), 20, 0, origin=ORIGIN)
    with pytest.raises(InferenceError, match="OTBTF version"):
        check_output(command, 20, 18)
    with pytest.raises(InferenceError, match="less than one field"):
        otbtf_output_grid([(sources[0][0], 56, 56, 57)], 20, 2)
