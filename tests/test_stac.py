"""STAC items and collections of engine outputs: schemas, contents, loading with odc-stac.

The extension schemas (proj v2.0.0, eo v1.1.0, raster v1.1.0, processing v1.2.0) are
vendored in ``tests/data/stac_schemas`` (see its README) and the core ones ship with
pystac: validation runs offline, and fails on a schema it would have to fetch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from click.testing import CliRunner
from pystac.validation import JsonSchemaSTACValidator, RegisteredValidator, set_validator
from rasterio.warp import transform_bounds

from decloud._version import __version__
from decloud.archive import Archive
from decloud.errors import StacError
from decloud.stac import COLLECTION_NAME, S2_BAND_INFO, item_path, write_collection
from tests.conftest import ARCHIVE, THEIA, THEIA_CLEAR

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
BANDS = ("B02", "B03", "B04", "B08")
#: Gap-filling targets on the clear date and between the two T33TVM dates.
TARGETS = (date(2015, 7, 11), date(2015, 8, 10))


class _OfflineValidator(JsonSchemaSTACValidator):
    """pystac's validator with the vendored schemas; fetching any other one fails."""

    def __init__(self) -> None:
        super().__init__()
        for path in SCHEMAS.glob("*.json"):
            schema = json.loads(path.read_text())
            uri = schema["$id"].rstrip("#")
            self.schema_cache[uri] = self.schema_cache[uri + "#"] = schema

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise AssertionError(f"schema not available offline: {schema_uri}")
        return self.schema_cache[schema_uri]


@pytest.fixture
def offline_validation() -> Any:
    previous = RegisteredValidator.get_validator()
    set_validator(_OfflineValidator())
    yield
    set_validator(previous)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two gap-filled dates of the real T33TVM sample, written by the engine."""
    pytest.importorskip("keras")
    from decloud.inference import EngineOptions
    from decloud.processors.gapfill import GapFillOptions, gapfill_tile

    out = tmp_path_factory.mktemp("series")
    archive = Archive.scan(s2_root=ARCHIVE / "S2")
    options = GapFillOptions(window_days=61, bands=BANDS,
                             engine=EngineOptions(block_size=64))
    results = gapfill_tile(archive, "T33TVM", list(TARGETS), out, options)
    assert [r.status for r in results] == ["done", "done"]
    return out


def _items(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.stac.json"))


def test_each_output_has_an_item_written_before_its_record(series: Path) -> None:
    items = _items(series)
    assert len(items) == 2
    for path in items:
        record = path.with_name(path.name.removesuffix(".stac.json") + ".json")
        cog = record.with_suffix(".tif")
        assert item_path(cog) == path and record.is_file()
        # The completion record stays the last file written.
        assert record.stat().st_mtime_ns >= path.stat().st_mtime_ns


def test_items_validate_against_the_schemas(series: Path, offline_validation: Any) -> None:
    for path in _items(series):
        item = pystac.Item.from_file(path)
        validated = item.validate()
        assert any("projection" in uri for uri in validated)
        assert any("eo" in uri for uri in validated)
        assert any("raster" in uri for uri in validated)
        assert any("processing" in uri for uri in validated)


def test_a_wrong_extension_field_fails_validation(series: Path,
                                                  offline_validation: Any) -> None:
    item = pystac.Item.from_file(_items(series)[0])
    item.properties["proj:shape"] = "100 x 100"
    with pytest.raises(pystac.errors.STACValidationError):
        item.validate()
    item = pystac.Item.from_file(_items(series)[0])
    item.properties["processing:software"] = "decloud"
    with pytest.raises(pystac.errors.STACValidationError):
        item.validate()


def test_item_describes_the_grid_bands_and_lineage(series: Path) -> None:
    path = _items(series)[1]
    item = json.loads(path.read_text())
    props = item["properties"]
    reflectance = path.parent / item["assets"]["reflectance"]["href"]
    with rasterio.open(reflectance) as src:
        assert props["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        assert props["proj:shape"] == [src.height, src.width]
        assert props["proj:transform"] == list(src.transform)[:6]
        assert props["proj:bbox"] == list(src.bounds)
        expected = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
    np.testing.assert_allclose(item["bbox"], expected, rtol=0, atol=1e-9)
    ring = np.array(item["geometry"]["coordinates"][0])
    np.testing.assert_allclose(ring.min(axis=0), expected[:2], atol=1e-9)
    np.testing.assert_allclose(ring.max(axis=0), expected[2:], atol=1e-9)
    # Counter-clockwise exterior ring (RFC 7946): positive shoelace area.
    x, y = ring[:, 0], ring[:, 1]
    assert np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) > 0
    assert props["datetime"] == "2015-08-10T00:00:00Z"
    assert props["start_datetime"].startswith("2015-07-11")
    assert props["end_datetime"].startswith("2015-09-09")
    bands = item["assets"]["reflectance"]["eo:bands"]
    assert [b["name"] for b in bands] == list(BANDS)
    assert bands[2] == {"name": "B04", "common_name": "red", "center_wavelength": 0.665}
    assert all(S2_BAND_INFO[b["name"]] == (b["common_name"], b["center_wavelength"])
               for b in bands)
    assert props["processing:software"] == {"decloud": __version__}
    assert props["processing:expression"]["expression"]["method"] == "gapfill"
    for product in (THEIA, THEIA_CLEAR):
        assert product.name in props["processing:lineage"]
    assert "2015-07-11" in props["processing:lineage"]
    assert "2015-09-09" in props["processing:lineage"]
    assets = item["assets"]
    assert assets["reflectance"]["roles"] == ["data"]
    assert "quality" in assets["quality"]["roles"]
    assert assets["days"]["roles"] == ["metadata"]
    assert assets["record"]["href"] == f"./{path.name.removesuffix('.stac.json')}.json"
    assert all(a["href"].startswith("./") for a in assets.values())
    assert assets["reflectance"]["raster:bands"][0] == {
        "nodata": -10000, "data_type": "int16", "scale": 0.0001}


def test_collection_validates_and_spans_the_items(series: Path, tmp_path: Path,
                                                  offline_validation: Any) -> None:
    folder = tmp_path / "moved"
    shutil.copytree(series, folder)
    path = write_collection(folder, collection_id="t33tvm-gapfill",
                            description="Gap-filled T33TVM")
    assert path == folder / COLLECTION_NAME
    collection = pystac.Collection.from_file(path)
    assert collection.validate()
    items = list(collection.get_items())
    assert sorted(i.id for i in items) == sorted(p.name.removesuffix(".stac.json")
                                                for p in _items(folder))
    boxes = np.array([i.bbox for i in items])
    assert collection.extent.spatial.bboxes == [[*boxes[:, :2].min(axis=0),
                                                 *boxes[:, 2:].max(axis=0)]]
    start, end = collection.extent.temporal.intervals[0]
    assert start == datetime(2015, 7, 11, 10, 0, 8, tzinfo=UTC)
    assert end == datetime(2015, 9, 9, 10, 0, 17, tzinfo=UTC)
    for item in items:
        assert item.collection_id == "t33tvm-gapfill"
        assert item.validate()
    links = json.loads(path.read_text())["links"]
    assert all(link["href"].startswith("./") for link in links)


def test_odc_stac_loads_the_series_with_grid_and_values(series: Path, tmp_path: Path) -> None:
    odc_stac = pytest.importorskip("odc.stac")
    folder = tmp_path / "elsewhere"
    shutil.copytree(series, folder)  # relative hrefs: the folder can move
    write_collection(folder)
    collection = pystac.Collection.from_file(folder / COLLECTION_NAME)
    items = sorted(collection.get_items(), key=lambda i: i.datetime)
    data = odc_stac.load(items, bands=[*BANDS, "quality", "days"], chunks=None)
    assert data.sizes["time"] == 2
    for i, item in enumerate(items):
        cog = folder / Path(item.assets["reflectance"].href).name
        with rasterio.open(cog) as src:
            assert data.odc.crs.epsg == src.crs.to_epsg()
            assert data.odc.geobox.resolution.x == src.res[0]
            assert data.odc.geobox.resolution.y == -src.res[1]
            assert data.odc.geobox.affine == src.transform
            expected = src.read()
        got = np.stack([data[b].isel(time=i).values for b in BANDS])
        np.testing.assert_array_equal(got, expected)
        with rasterio.open(cog.with_name(cog.stem + "_quality.tif")) as src:
            np.testing.assert_array_equal(data["quality"].isel(time=i).values, src.read(1))


def test_cli_writes_the_collection(series: Path, tmp_path: Path) -> None:
    from decloud.cli.main import cli

    folder = tmp_path / "cli"
    shutil.copytree(series, folder)
    result = CliRunner().invoke(cli, ["stac", "collection", str(folder), "--id", "ts"])
    assert result.exit_code == 0, result.output
    assert json.loads((folder / COLLECTION_NAME).read_text())["id"] == "ts"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["stac", "collection", str(empty)])
    assert result.exit_code == 1 and "StacError" in result.output


def test_collection_refusals(series: Path, tmp_path: Path) -> None:
    with pytest.raises(StacError, match="no STAC item"):
        write_collection(tmp_path)
    broken = tmp_path / "broken.stac.json"
    broken.write_text("{not json")
    with pytest.raises(StacError, match="not a STAC item"):
        write_collection(tmp_path)
    sub = tmp_path / "sub"
    sub.mkdir()
    with pytest.raises(StacError, match="outside"):
        write_collection(sub, items=_items(series))


def test_engine_writes_no_item_when_asked_not_to(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from decloud.inference import EngineOptions
    from decloud.processors.gapfill import GapFillOptions, gapfill_tile

    archive = Archive.scan(s2_root=ARCHIVE / "S2")
    options = GapFillOptions(window_days=61, bands=BANDS,
                             engine=EngineOptions(block_size=64, stac=False))
    gapfill_tile(archive, "T33TVM", [TARGETS[1]], tmp_path, options)
    assert not list(tmp_path.glob("*.stac.json")) and list(tmp_path.glob("*.json"))


def _record(inputs: dict[str, Any], crs: str, tmp_path: Path) -> Any:
    from decloud.inference.engine import RunRecord

    return RunRecord(
        outputs={"reflectance": str(tmp_path / "x.tif"),
                 "quality": str(tmp_path / "x_quality.tif")},
        method={"name": "msop", "model_checksum": "sha256:abc"}, inputs=inputs,
        parameters={"target": "t"},
        grid={"crs": crs, "transform": [10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0],
              "width": 30, "height": 20},
        timing={}, pixels={}, blocks={}, finished="2026-01-02T03:04:05+00:00")


def test_item_of_per_block_inputs_and_a_crs_without_epsg(tmp_path: Path,
                                                         offline_validation: Any) -> None:
    from decloud.stac import build_item

    def s2(name: str, when: str) -> dict[str, Any]:
        return {"s2": {"path": f"/a/{name}", "date": when}}

    inputs = {"per_block": [
        {"acquisitions": {"t": s2("T", "2020-05-10T10:00:00+00:00"),
                          "tm1": s2("A", "2020-04-30T10:00:00+00:00")}, "reference": "t"},
        {"acquisitions": {"t": s2("T", "2020-05-10T10:00:00+00:00"),
                          "tm1": s2("B", "2020-04-20T10:00:00+00:00")}, "reference": "t"},
    ]}
    item = build_item(_record(inputs, "EPSG:32631", tmp_path))
    assert item.datetime == datetime(2020, 5, 10, 10, tzinfo=UTC)
    assert item.properties["start_datetime"] == "2020-04-20T10:00:00Z"
    lineage = item.properties["processing:lineage"]
    assert lineage.count("S2 T (") == 1 and "S2 A (" in lineage and "S2 B (" in lineage
    assert item.properties["processing:expression"]["expression"]["model_checksum"] == (
        "sha256:abc")
    assert item.properties["proj:bbox"] == [600000.0, 4999800.0, 600300.0, 5000000.0]
    item.validate()
    # A CRS without an EPSG code: described by its WKT2.
    local = ('PROJCS["local",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
             '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
             'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
             'PARAMETER["central_meridian",3.3],PARAMETER["scale_factor",0.9996],'
             'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],'
             'UNIT["metre",1]]')
    item = build_item(_record(inputs, local, tmp_path))
    assert item.properties["proj:code"] is None and "PROJCRS" in item.properties["proj:wkt2"]
    item.validate()
    with pytest.raises(StacError, match="no reflectance"):
        build_item(dataclasses.replace(_record(inputs, "EPSG:32631", tmp_path), outputs={}))
