"""The multi-temporal processor: per-block neighbours, streamed equals whole per block, CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from decloud.archive import Archive
from decloud.constants import S2_NODATA
from decloud.errors import InferenceError, NoProductError
from decloud.grid import Grid
from decloud.index.catalog import Catalog
from decloud.inference import EngineOptions, KerasMethod
from decloud.inference.composite import QUALITY_NODATA
from decloud.inference.engine import DAYS_NODATA
from decloud.inputs import InputProducts, read_inputs
from decloud.keys import encode_s2
from decloud.layouts import load_layout
from decloud.models.config import UNetConfig
from decloud.models.inference import input_nodata, predict
from decloud.models.registry import get_config
from decloud.models.zoo import build
from decloud.processors.multitemporal import (
    DEFAULT_LAYOUT,
    MultiTemporalOptions,
    multitemporal,
    plan_multitemporal,
)
from decloud.processors.neighbours import choose_neighbours
from decloud.windows import pad_to_multiple
from tests.conftest import ARCHIVE

TILE = "T31UFS"  # 60 x 66 px, 12 S2 dates and 10 S1 images in April 2023
DAY = date(2023, 4, 15)  # S1 neighbours differ between blocks on this date
PATCH = 12
BLOCK = 24
# The sample SAFE products carry B04 and B08 at 10 m.
CONFIG = {"name": "msop_tiny", "description": "tiny msop for tests", "network": {
    "kind": "unet", "dates": ["tm1", "t", "tp1"],
    "sources": {"tm1": ["s2", "s1"], "t": ["s2", "s1"], "tp1": ["s2", "s1"]},
    "s2_bands": ["B04", "B08"], "widths": [4, 8, 8], "dem": False, "residual": "t"}}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """The sample tile's catalog, built by the library's index build."""
    archive = Archive.scan(ARCHIVE / "S2" / TILE, ARCHIVE / "S1" / TILE)
    with Catalog.create(tmp_path_factory.mktemp("mt") / "catalog",
                        patch_size=PATCH) as built:
        assert not built.add(archive).failed
        yield built


@pytest.fixture(scope="module")
def method() -> KerasMethod:
    """A tiny untrained multi-temporal U-Net (seeded weights)."""
    config = get_config("msop_small").model_copy(deep=True)
    assert isinstance(config.network, UNetConfig)
    config.network.widths = [4, 8, 8]
    config.network.dem = False
    config.network.s2_bands = ["B04", "B08"]
    keras.utils.set_random_seed(11)
    model, spec = build(config)
    return KerasMethod(model, spec, source="config:msop_tiny")


def _options(**engine: object) -> MultiTemporalOptions:
    return MultiTemporalOptions(engine=EngineOptions(block_size=BLOCK, **engine))  # type: ignore[arg-type]


def _whole_prediction(method: KerasMethod, products: InputProducts, grid: Grid) -> np.ndarray:
    """One prediction over the whole grid with one set of products (NaN unobserved)."""
    m, k = method.margin, method.size_multiple
    inputs = read_inputs(method.input_keys, products, grid, margin=m, dem_policy="partial")
    batch = {}
    for key, data in inputs.items():
        padded, _ = pad_to_multiple(data.astype(np.float32), k, fill=input_nodata(key),
                                    axes=(0, 1))
        batch[key] = padded[None]
    out = predict(method.model, method.spec, batch)[method.output_key][0]
    out = out[m:m + grid.height, m:m + grid.width]
    seen = np.zeros((grid.height, grid.width), bool)
    for key, data in inputs.items():
        nodata = S2_NODATA if key.startswith("s2_") else input_nodata(key)
        seen |= (data != nodata).any(axis=-1)[m:m + grid.height, m:m + grid.width]
    return np.where(seen[..., None], out, np.nan)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_choice_is_choose_neighbours_on_the_patch_lattice(catalog: Catalog,
                                                          method: KerasMethod) -> None:
    # 20 px asked: rounded up to the patch lattice (24 = lcm(12, 4) multiple).
    options = MultiTemporalOptions(engine=EngineOptions(block_size=20))
    plan = plan_multitemporal(method, catalog, TILE, DAY, options)
    cores = [core for core, _ in plan.grid_blocks]
    assert plan.engine.block_size == BLOCK
    assert all(int(c.col_off) % PATCH == 0 and int(c.row_off) % PATCH == 0 for c in cores)
    expected = choose_neighbours(catalog, TILE, plan.target.acquired,
                                 load_layout(DEFAULT_LAYOUT), cores,
                                 acquisitions=("tm1", "tp1"))
    assert [c.to_dict() for c in plan.choices] == [c.to_dict() for c in expected]
    # Blocks with equal choices share one set of opened products, others do not.
    keys = [c.key() for c in plan.choices]
    assert len(set(keys)) > 1
    for a, b in itertools.pairwise(cores):
        same = keys[cores.index(a)] == keys[cores.index(b)]
        assert (plan.products_of(a) is plan.products_of(b)) == same


def test_blocks_equal_whole_predictions_with_their_products(
        catalog: Catalog, method: KerasMethod, tmp_path: Path) -> None:
    # No composite: the reconstruction itself is written everywhere it has a value.
    options = _options(target=None)
    plan = plan_multitemporal(method, catalog, TILE, DAY, options)
    record = multitemporal(catalog, TILE, DAY, method, tmp_path / "out.tif", options)
    assert record.blocks["total"] == len(plan.grid_blocks) == 9
    written = _read(tmp_path / "out.tif")
    wholes: dict[object, np.ndarray] = {}
    for (core, _), choice in zip(plan.grid_blocks, plan.choices, strict=True):
        key = choice.key()
        if key not in wholes:
            whole = _whole_prediction(method, plan.products_of(core), plan.grid)
            wholes[key] = encode_s2(np.moveaxis(whole, -1, 0) / np.float32(10000.0))
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        np.testing.assert_array_equal(written[:, rows, cols], wholes[key][:, rows, cols])
    # Different products give different outputs: the per-block choice is not a no-op.
    first, second = list(wholes.values())[:2]
    assert not np.array_equal(first, second)


def test_record_and_neighbours_band(catalog: Catalog, method: KerasMethod,
                                    tmp_path: Path) -> None:
    plan = plan_multitemporal(method, catalog, TILE, DAY, _options())
    record = multitemporal(catalog.folder, TILE, DAY, method, tmp_path / "out.tif", _options())
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["extra"]["neighbours"] == [c.to_dict() for c in plan.choices]
    assert saved["extra"]["target"]["acquired"].startswith("2023-04-15")
    assert record.outputs["neighbours"] == str(tmp_path / "out_neighbours.tif")
    # The record lists each distinct set of products.
    assert len(saved["inputs"]["per_block"]) == len({c.key() for c in plan.choices})
    band = _read(tmp_path / "out_neighbours.tif")
    quality = _read(tmp_path / "out_quality.tif")[0]
    with rasterio.open(tmp_path / "out_neighbours.tif") as src:
        assert src.descriptions == ("days_tm1", "days_tp1")
        assert src.nodata == DAYS_NODATA
    for (core, _), choice in zip(plan.grid_blocks, plan.choices, strict=True):
        rows = slice(int(core.row_off), int(core.row_off + core.height))
        cols = slice(int(core.col_off), int(core.col_off + core.width))
        for i, name in enumerate(("tm1", "tp1")):
            s2 = choice.choices[name].s2
            assert s2 is not None
            days = round(abs((s2.acquired - plan.target.acquired).total_seconds()) / 86400)
            want = np.where(quality[rows, cols] == QUALITY_NODATA, DAYS_NODATA, days)
            np.testing.assert_array_equal(band[i, rows, cols], want)
    assert (band[0] >= 10).all() and (band[1] >= 10).all()  # os2 windows: >= 240 h


def test_refusals_name_what_is_missing(catalog: Catalog, method: KerasMethod,
                                       tmp_path: Path) -> None:
    with pytest.raises(NoProductError, match="no S2 product of T31UFS on 2023-04-16"):
        plan_multitemporal(method, catalog, TILE, date(2023, 4, 16), _options())
    with pytest.raises(NoProductError, match="T31TEJ is not in the catalog"):
        plan_multitemporal(method, catalog, "T31TEJ", DAY, _options())
    # The first date has no earlier S2 date in os2's t-1 window.
    with pytest.raises(InferenceError, match="acquisition 'tm1'") as err:
        multitemporal(catalog, TILE, date(2023, 4, 2), method, tmp_path / "x.tif", _options())
    assert err.value.field == "tm1"
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_model_needing_a_dem_without_one_is_refused(catalog: Catalog) -> None:
    keras.utils.set_random_seed(0)
    config = get_config("msop_small").model_copy(deep=True)
    assert isinstance(config.network, UNetConfig)
    config.network.widths = [4, 8]
    model, spec = build(config)
    with pytest.raises(InferenceError, match="needs a DEM"):
        plan_multitemporal(KerasMethod(model, spec), catalog, TILE, DAY, _options())


def test_cli_end_to_end(catalog: Catalog, tmp_path: Path) -> None:
    from decloud.cli.main import cli

    config = tmp_path / "msop_tiny.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "run" / "out.tif"
    out.parent.mkdir()
    args = ["process", "multi-temporal", "--catalog", str(catalog.folder), "--tile", TILE,
            "--date", "2023-04-15", "--model", str(config), "--allow-untrained",
            "--out", str(out), "--block-size", str(BLOCK)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in ("out.tif", "out_quality.tif", "out_neighbours.tif", "out.json"):
        assert (out.parent / name).is_file()
    with rasterio.open(out) as src:
        assert src.profile["tiled"] and src.overviews(1) is not None
    saved = json.loads((out.parent / "out.json").read_text())
    assert len(saved["extra"]["neighbours"]) == 9
    # Without the flag a configuration name is not a model.
    plain = [a if a != str(config) else "msop_small" for a in args if a != "--allow-untrained"]
    refused = CliRunner().invoke(cli, plain)
    assert refused.exit_code != 0 and "allow-untrained" in refused.output
    # Existing outputs are not replaced without --overwrite.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "exists already" in again.output


def test_archive_source_indexes_the_tile_like_a_catalog(catalog: Catalog, method: KerasMethod,
                                                        tmp_path: Path) -> None:
    archive = Archive.scan(ARCHIVE / "S2" / TILE, ARCHIVE / "S1" / TILE)
    options = dataclasses.replace(_options(), patch_size=PATCH)
    from_archive = multitemporal(archive, TILE, DAY, method, tmp_path / "a.tif", options)
    from_catalog = multitemporal(catalog, TILE, DAY, method, tmp_path / "c.tif", options)
    assert from_archive.extra == from_catalog.extra
    for suffix in (".tif", "_quality.tif", "_neighbours.tif"):
        assert np.array_equal(_read(tmp_path / f"a{suffix}"), _read(tmp_path / f"c{suffix}"))
    with pytest.raises(NoProductError, match="T31TEJ has no S2 product"):
        multitemporal(archive, "T31TEJ", DAY, method, tmp_path / "x.tif", options)


def test_os1_model_without_s2_at_t(catalog: Catalog, tmp_path: Path) -> None:
    """os1_unet reads S1 only at t: the composite still reads the target's S2 and mask."""
    config = get_config("os1_unet").model_copy(deep=True)
    assert isinstance(config.network, UNetConfig)
    config.network.widths = [4, 8]
    config.network.dem = False
    config.network.s2_bands = ["B04", "B08"]
    keras.utils.set_random_seed(5)
    model, spec = build(config)
    method = KerasMethod(model, spec)
    assert "s2_t" not in {k.name for k in method.input_keys}
    options = dataclasses.replace(_options(), layout="os1-occitanie")
    record = multitemporal(catalog, TILE, DAY, method, tmp_path / "os1.tif", options)
    assert record.extra["layout"] == "os1-occitanie"
    assert record.pixels["nodata"] == 0 and record.blocks["skipped"] == 0
