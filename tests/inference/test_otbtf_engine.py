"""``--engine otbtf`` end to end, against a stand-in ``otbcli_TensorflowModelServe``.

The stand-in (:data:`FAKE_OTBTF`) is written from OTBTF's
``TensorflowMultisourceModelFilter`` (github remicres/otbtf), not from decloud: the
output grid of ``GenerateOutputInformation`` (each source's extent shrunk by its
``rfield``, their intersection, the origin moved out by half a field, the size cut to
whole fields), the input region of each field from ``GenerateInputRequestedRegion``
(physical corners, ``SmartPad``), and the SavedModel's ``serving_default`` run on
each field. decloud's outputs through it must equal the native engine's.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from decloud.cli.main import cli
from tests.conftest import ARCHIVE

pytest.importorskip("tensorflow")

FAKE_OTBTF = '''#!{python}
"""Stand-in for otbcli_TensorflowModelServe (fully convolutional mode), after OTBTF."""
import math
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import rasterio
import tensorflow as tf
from affine import Affine
from rasterio.windows import Window

args, opt, i = sys.argv[1:], {{}}, 0
while i < len(args):
    step = 3 if args[i] == "-out" else 2  # -out FILE TYPE
    opt[args[i]] = args[i + 1]
    i += step
n = int(os.environ.get("OTB_TF_NSOURCES", "1"))
src = [(rasterio.open(opt[f"-source{{k}}.il"]), int(opt[f"-source{{k}}.rfieldx"]),
        opt[f"-source{{k}}.placeholder"]) for k in range(1, n + 1)]
ef = int(opt["-output.efieldx"])
scale = float(opt.get("-output.spcscale", 1))
s = src[0][0].transform.a
S = s * scale
# GenerateOutputInformation: shrunk extents (pixel corners), intersected.
inf_x, sup_x, inf_y, sup_y = -math.inf, math.inf, -math.inf, math.inf
for ds, r, _ in src:
    t, lo = ds.transform, r // 2
    last_x, last_y = lo + ds.width - r, lo + ds.height - r
    xs = (t.c + (lo + 0.5) * t.a, t.c + (last_x + 0.5) * t.a)
    ys = (t.f + (lo + 0.5) * t.e, t.f + (last_y + 0.5) * t.e)
    inf_x, sup_x = max(inf_x, min(xs) - t.a / 2), min(sup_x, max(xs) + t.a / 2)
    inf_y, sup_y = max(inf_y, min(ys) + t.e / 2), min(sup_y, max(ys) - t.e / 2)
ox = inf_x + 0.5 * s - S * math.floor(0.5 * ef)  # centre of the first output pixel
oy = sup_y - 0.5 * s + S * math.floor(0.5 * ef)
size = [math.floor((sup_x - inf_x) / S) + ef - 1, math.floor((sup_y - inf_y) / S) + ef - 1]
if min(size) < ef:
    sys.exit("Output grid size is larger than output image size !")
W, H = (v - v % ef for v in size)


def to_index(p, origin, spacing):
    return math.floor((p - origin) / spacing + 0.5)  # ITK: round half up


def region(lo_out, origin_out, spacing_out, ds_origin, ds_spacing, r, length):
    """GenerateInputRequestedRegion along one axis: [start, stop) of the source."""
    start = origin_out + lo_out * spacing_out
    end = origin_out + (lo_out + ef - 1) * spacing_out
    border = 0.5 * (abs(ds_spacing) - abs(spacing_out))
    if start < end:
        start, end = start + border, end - border
    else:
        start, end = start - border, end + border
    a = to_index(start, ds_origin + ds_spacing / 2, ds_spacing)
    b = to_index(end, ds_origin + ds_spacing / 2, ds_spacing)
    i0, i1 = max(min(a, b), 0), min(max(a, b) + 1, length)
    pad = r - int(1 + (ef - 1) * S / abs(ds_spacing))
    lval = pad - int(0.5 * pad)
    return max(i0 - lval, 0), min(i1 - lval + pad, length)


model = tf.saved_model.load(opt["-model.dir"])
fn = model.signatures["serving_default"]
name = opt["-output.names"]
out = None
for ty in range(0, H, ef):
    for tx in range(0, W, ef):
        feed = {{}}
        for ds, r, placeholder in src:
            t = ds.transform
            x0, x1 = region(tx, ox, S, t.c, t.a, r, ds.width)
            y0, y1 = region(ty, oy, -S, t.f, t.e, r, ds.height)
            data = ds.read(window=Window(x0, y0, x1 - x0, y1 - y0)).astype(np.float32)
            feed[placeholder] = tf.constant(np.moveaxis(data, 0, -1)[None])
        y = fn(**feed)[name].numpy()[0]
        if y.shape[:2] != (ef, ef):
            sys.exit(f"tensor of {{y.shape}} for a field of {{ef}}")
        if out is None:
            out = np.zeros((y.shape[2], H, W), np.float32)
        out[:, ty:ty + ef, tx:tx + ef] = np.moveaxis(y, -1, 0)
path = opt["-out"].split("?")[0]
with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=out.shape[0],
                   dtype="float32", crs=src[0][0].crs,
                   transform=Affine(S, 0, ox - S / 2, 0, -S, oy + S / 2)) as dst:
    dst.write(out)
'''


def install_fake_otbtf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in on PATH as ``otbcli_TensorflowModelServe``."""
    folder = tmp_path / "otbtf-bin"
    folder.mkdir()
    exe = folder / "otbcli_TensorflowModelServe"
    exe.write_text(FAKE_OTBTF.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return exe


@pytest.fixture
def fake_otbtf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``otbcli_TensorflowModelServe`` on PATH: the stand-in."""
    return install_fake_otbtf(tmp_path, monkeypatch)


BASE = ["process", "single-date", "--archive", str(ARCHIVE), "--tile", "T29UPU",
        "--date", "2017-06-17", "--block-size", "48"]


def _tiny_config(path: Path) -> Path:
    """A tiny single-date S2 + S1 U-Net configuration (YAML)."""
    from decloud.models.registry import get_config

    config = get_config("ssop_unet").model_dump(mode="json", exclude={"source"})
    config["name"] = "tiny_ssop"
    config["network"].update(widths=[4, 8, 8], dem=False)
    path.write_text(yaml.safe_dump(config))
    return path


def _profile(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as src:
        return {"profile": {k: v for k, v in src.profile.items()},
                "descriptions": src.descriptions, "overviews": src.overviews(1),
                "tags": src.tags(), "layout": src.tags(ns="IMAGE_STRUCTURE"),
                "data": src.read()}


def _tiny_dsen2cr(path: Path) -> Path:
    """A tiny DSen2-CR (S2 at 10 m and 20 m, and S1 in): 20 m keys through OTBTF."""
    from decloud.models.registry import get_config

    config = get_config("dsen2cr").model_dump(mode="json", exclude={"source"})
    config["name"] = "tiny_dsen2cr"
    config["network"].update(features=8, blocks=2)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_single_date_otbtf_equals_native(tmp_path: Path, fake_otbtf: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from decloud.inference.otbtf import OtbtfMethod

    config = _tiny_dsen2cr(tmp_path / "tiny.yaml")
    # The temporary folders (export, region rasters) go here, and must be gone after.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    closed: list[OtbtfMethod] = []
    real_close = OtbtfMethod.close
    monkeypatch.setattr(OtbtfMethod, "close",
                        lambda self: (closed.append(self), real_close(self))[-1])
    # A caller's OTB/ITK variable changes what OTB computes: passed on and recorded.
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    runs = {}
    for engine in ("native", "otbtf"):
        out = tmp_path / engine / "T29UPU_20170617.tif"
        result = CliRunner().invoke(cli, [*BASE, "--model", str(config), "--allow-untrained",
                                          "--out", str(out), "--engine", engine])
        assert result.exit_code == 0, result.output
        runs[engine] = out
    assert len(closed) == 1 and list(scratch.glob("decloud-*")) == []
    for name in ("T29UPU_20170617.tif", "T29UPU_20170617_quality.tif"):
        native, otbtf = (_profile(runs[e].parent / name) for e in ("native", "otbtf"))
        # Identical after encoding: pixels, quality, COG layout, nodata, bands, tags.
        np.testing.assert_array_equal(otbtf.pop("data"), native.pop("data"))
        for tags, engine in ((otbtf["tags"], "otbtf"), (native["tags"], None)):
            tags.pop("DECLOUD_CREATED")
            method = json.loads(tags.pop("DECLOUD_METHOD"))
            assert method.pop("engine", None) == engine and method.pop("savedmodel", None) is None
            tags["method"] = method
        assert otbtf == native
    native_record = json.loads(runs["native"].with_suffix(".json").read_text())
    record = json.loads(runs["otbtf"].with_suffix(".json").read_text())
    assert record["method"].pop("engine") == "otbtf" and record["method"].pop("savedmodel") is None
    served = record["extra"].pop("otbtf")
    assert served["regions"] == 1 and len(served["commands"]) == 1
    assert served["environment"]["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"
    assert "OTB_MAX_RAM_HINT" in served["environment"]
    assert "-model.dir" in served["commands"][0] and "OTB_MAX_RAM_HINT=" in served["commands"][0]
    for key in ("timing", "finished"):
        record.pop(key), native_record.pop(key)
    for rec, engine in ((record, "otbtf"), (native_record, "native")):
        rec["outputs"] = {k: v.replace(f"/{engine}/", "/") for k, v in rec["outputs"].items()}
    assert record == native_record
    assert (runs["otbtf"].parent / "T29UPU_20170617.stac.json").is_file()


def test_absent_otbtf_is_one_line_and_writes_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out" / "x.tif"
    result = CliRunner().invoke(cli, [*BASE, "--model", "msop_small", "--allow-untrained",
                                      "--out", str(out), "--engine", "otbtf"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "otbcli_TensorflowModelServe is not on PATH" in lines[0]
    assert "mdl4eo/otbtf" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_absent_otbtf_loads_no_keras(tmp_path: Path) -> None:
    """On a terminal: one line, before TensorFlow's start-up lines could print."""
    from decloud.cli.options import OTBTF_EXECUTABLE
    from decloud.models.otbtf import EXECUTABLE

    assert OTBTF_EXECUTABLE == EXECUTABLE
    code = ("import sys; from decloud.cli.main import cli\n"
            "try:\n    cli(sys.argv[1:], standalone_mode=False)\n"
            "except Exception as err:\n    print(type(err).__name__)\n"
            "print('keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *BASE, "--model", "msop_small",
                           "--allow-untrained", "--out", str(tmp_path / "o.tif"),
                           "--engine", "otbtf"], env={**os.environ, "PATH": str(tmp_path)},
                          capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["ClickException", "False"]
    assert done.stderr == ""


def test_series_refuses_gapfill_with_otbtf(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["process", "series", "--archive", str(ARCHIVE),
                                      "--tile", "T29UPU", "--start", "2017-06-01",
                                      "--end", "2017-06-30", "--method", "gapfill",
                                      "--out", str(tmp_path / "s"), "--engine", "otbtf"])
    assert result.exit_code == 2 and "gapfill has no model" in result.output
    assert not (tmp_path / "s").exists()


def test_series_refuses_otbtf_on_dask_workers(tmp_path: Path, fake_otbtf: Path) -> None:
    model = tmp_path / "model.keras"
    model.write_text("")
    result = CliRunner().invoke(cli, ["process", "series", "--archive", str(ARCHIVE),
                                      "--tile", "T29UPU", "--start", "2017-06-01",
                                      "--end", "2017-06-30", "--method", str(model),
                                      "--out", str(tmp_path / "s"), "--engine", "otbtf",
                                      "--workers", "2"])
    assert result.exit_code == 2 and "drop --workers" in result.output
    assert not (tmp_path / "s").exists()


def test_savedmodel_needs_the_otbtf_engine(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*BASE, "--model", "x", "--allow-untrained",
                                      "--out", str(tmp_path / "o.tif"),
                                      "--savedmodel", str(tmp_path)])
    assert result.exit_code == 2 and "--engine otbtf only" in result.output


@pytest.mark.slow
def test_multitemporal_otbtf_equals_native(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-block neighbours: one OTBTF region per set of products, same outputs."""
    import keras

    from decloud.archive import Archive
    from decloud.index.catalog import Catalog
    from decloud.inference import EngineOptions, KerasMethod
    from decloud.inference.otbtf import OtbtfMethod
    from decloud.models.config import UNetConfig
    from decloud.models.registry import get_config
    from decloud.models.zoo import build
    from decloud.processors.multitemporal import MultiTemporalOptions, multitemporal
    from tests.processors.test_multitemporal import BLOCK, DAY, PATCH, TILE

    install_fake_otbtf(tmp_path, monkeypatch)
    config = get_config("msop_small").model_copy(deep=True)
    assert isinstance(config.network, UNetConfig)
    config.network.widths = [4, 8, 8]
    config.network.dem = False
    config.network.s2_bands = ["B04", "B08"]
    keras.utils.set_random_seed(11)
    native = KerasMethod(*build(config), source="config:msop_tiny")
    served = OtbtfMethod.from_method(native)
    options = MultiTemporalOptions(engine=EngineOptions(block_size=BLOCK))
    archive = Archive.scan(ARCHIVE / "S2" / TILE, ARCHIVE / "S1" / TILE)
    with Catalog.create(tmp_path / "catalog", patch_size=PATCH) as catalog:
        assert not catalog.add(archive).failed
        records = {name: multitemporal(catalog, TILE, DAY, method, tmp_path / name / "o.tif",
                                       options)
                   for name, method in (("native", native), ("otbtf", served))}
    served.close()
    # Blocks sharing their products share a region: fewer regions than blocks, not one.
    assert 1 < records["otbtf"].extra["otbtf"]["regions"] < records["otbtf"].blocks["total"]
    for name in ("o.tif", "o_quality.tif", "o_neighbours.tif"):
        with rasterio.open(tmp_path / "native" / name) as a, \
                rasterio.open(tmp_path / "otbtf" / name) as b:
            np.testing.assert_array_equal(b.read(), a.read())
    assert records["otbtf"].extra["neighbours"] == records["native"].extra["neighbours"]


@pytest.mark.slow
def test_series_otbtf_equals_native_and_resumes(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A series through OTBTF: native outputs, and a rerun finds its dates complete."""
    from datetime import date, timedelta

    from decloud.archive import Archive
    from decloud.inference import EngineOptions, KerasMethod
    from decloud.inference.otbtf import OtbtfMethod
    from decloud.models.config import load_config
    from decloud.models.zoo import build
    from decloud.processors.timeseries import ModelDates, SeriesOptions, run_series

    install_fake_otbtf(tmp_path, monkeypatch)
    native = KerasMethod(*build(load_config(_tiny_config(tmp_path / "tiny.yaml"))),
                         source="config:tiny")
    archive = Archive.from_roots(ARCHIVE, None, None, None)
    day = date(2017, 6, 17)
    options = SeriesOptions(engine=EngineOptions(block_size=48), quicklooks=False)
    outputs = {}
    for name, method in (("native", native), ("otbtf", OtbtfMethod.from_method(native))):
        plugin = ModelDates(method, timedelta(hours=72))
        reports = run_series(archive, "T29UPU", day, day, plugin, tmp_path / name, options)
        assert [r.status for r in reports] == ["done"]
        outputs[name] = reports[0].output
        if name == "otbtf":
            again = run_series(archive, "T29UPU", day, day, plugin, tmp_path / name, options)
            assert [r.status for r in again] == ["complete"]
    with rasterio.open(outputs["native"]) as a, rasterio.open(outputs["otbtf"]) as b:
        np.testing.assert_array_equal(b.read(), a.read())
