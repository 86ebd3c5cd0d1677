"""STAC metadata of the engine's outputs: one Item per output, one Collection per folder.

Every engine run (:func:`decloud.inference.engine.run`) writes, next to its COG
``<out>.tif``, a STAC Item ``<out>.stac.json`` (just before the completion record
``<out>.json``, which stays the last file written), so the outputs load in the STAC
tools users already have (odc-stac, stackstac, QGIS, STAC browsers). The Item carries:

- the ``proj`` extension (v2.0.0): ``proj:code`` (EPSG), ``proj:shape``,
  ``proj:transform`` and ``proj:bbox`` in the grid's CRS; geometry and bbox are in
  EPSG:4326 (the footprint's edges densified before reprojection);
- the ``eo`` extension (v1.1.0) on the reflectance asset: each band's ESA name, common
  name and centre wavelength (S2A, micrometres);
- the ``raster`` extension (v1.1.0) on every raster asset: data type, nodata and, for
  the reflectance, the scale (1e-4) that gives reflectance from the stored integers;
- the ``processing`` extension (v1.2.0): software (``decloud`` and its version), level
  (``L3``: a product derived from several L2A acquisitions), the method and its model
  checksum (``processing:expression``), and a lineage text naming every input and its
  date.

Assets: ``reflectance`` (role ``data``), ``quality`` (``quality``, ``metadata``),
``days`` and any extra layer (``metadata``), and ``record`` (the completion record,
``metadata``). Every href is relative (``./<file>``), so the folder can be moved.

:func:`write_collection` gathers the items of a folder (a time series) into a STAC
Collection ``collection.json`` with their spatial and temporal extents and relative
``item`` links, and links each item back to it.

Stage: this module reads the engine's completion records
(:class:`~decloud.inference.engine.RunRecord`); the engine calls it lazily, nothing in
an earlier stage imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform as warp_transform

from decloud._version import __version__
from decloud.errors import StacError
from decloud.writers import atomic_file

if TYPE_CHECKING:
    from decloud.inference.engine import RunRecord

__all__ = [
    "COLLECTION_NAME",
    "ITEM_SUFFIX",
    "PROCESSING_SCHEMA",
    "S2_BAND_INFO",
    "build_item",
    "item_path",
    "write_collection",
    "write_item",
]

#: Suffix of an item next to its output: ``<out>.stac.json``.
ITEM_SUFFIX: Final = ".stac.json"

#: File name of a folder's collection.
COLLECTION_NAME: Final = "collection.json"

#: The processing extension (pystac has no class for it: its fields are set directly).
PROCESSING_SCHEMA: Final = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"

#: ESA band name -> (STAC common name, centre wavelength in micrometres, S2A MSI).
S2_BAND_INFO: Final[Mapping[str, tuple[str, float]]] = {
    "B01": ("coastal", 0.443), "B02": ("blue", 0.490), "B03": ("green", 0.560),
    "B04": ("red", 0.665), "B05": ("rededge", 0.705), "B06": ("rededge", 0.740),
    "B07": ("rededge", 0.783), "B08": ("nir", 0.842), "B8A": ("nir08", 0.865),
    "B09": ("nir09", 0.945), "B10": ("cirrus", 1.375), "B11": ("swir16", 1.610),
    "B12": ("swir22", 2.190),
}

#: Stored integers x this scale = reflectance (the engine writes reflectance x 10000).
_REFLECTANCE_SCALE: Final = 1e-4

#: Points per footprint edge reprojected to EPSG:4326 (UTM edges curve in lon/lat).
_DENSIFY: Final = 21

_ROLES: Final[Mapping[str, list[str]]] = {
    "reflectance": ["data"], "quality": ["quality", "metadata"], "record": ["metadata"]}


def item_path(out: str | Path) -> Path:
    """The STAC item of output ``out`` (``<out>.stac.json``, ``.tif`` dropped)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".tif" else out
    return Path(f"{stem}{ITEM_SUFFIX}")


def _footprint(crs: CRS, transform: Affine, width: int, height: int
               ) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon and bbox of the grid in EPSG:4326, edges densified.

    The ring runs counter-clockwise (RFC 7946): down the left edge, along the bottom,
    up the right edge and back along the top (rows grow southwards).
    """
    steps = np.linspace(0.0, 1.0, _DENSIFY)[:-1]  # each corner once
    n = len(steps)
    cols = np.concatenate([np.zeros(n), steps * width, np.full(n, float(width)),
                           (1.0 - steps) * width])
    rows = np.concatenate([steps * height, np.full(n, float(height)),
                           (1.0 - steps) * height, np.zeros(n)])
    xs, ys = transform * (cols, rows)
    lons, lats = warp_transform(crs, CRS.from_epsg(4326), list(xs), list(ys))
    ring = [[float(x), float(y)] for x, y in zip(lons, lats, strict=True)]
    ring.append(ring[0])
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [ring]}, [float(v) for v in bbox]


def _acquisition_dates(inputs: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Acquisition name -> ``(kind: path, date)`` of each input, all block sets merged."""
    sets = inputs.get("per_block", [inputs])
    out: dict[str, list[tuple[str, str]]] = {}
    for one in sets:
        for name, entry in one.get("acquisitions", {}).items():
            listed = out.setdefault(name, [])
            if "s2" in entry:
                found = (f"S2 {Path(entry['s2']['path']).name}", entry["s2"]["date"])
                if found not in listed:
                    listed.append(found)
            if "s1" in entry:
                for file in entry["s1"]["files"]:
                    found = (f"S1 {Path(file).name}", entry["s1"]["date"])
                    if found not in listed:
                        listed.append(found)
    return out


def _parse(value: str) -> datetime:
    when = datetime.fromisoformat(value)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _nominal(record: RunRecord, dates: Mapping[str, list[tuple[str, str]]]) -> datetime | None:
    """The date the output stands for: the method's target date, else the target's."""
    target_date = record.method.get("target_date")
    if isinstance(target_date, str):
        return _parse(target_date)
    inputs_of = record.inputs.get("per_block", [record.inputs])
    for name in (record.parameters.get("target"),
                 *(one.get("reference") for one in inputs_of)):
        if isinstance(name, str) and dates.get(name):
            return _parse(dates[name][0][1])
    return None


def _lineage(record: RunRecord, dates: Mapping[str, list[tuple[str, str]]]) -> str:
    method = record.method.get("name") or record.method.get("method") or "method"
    parts = [f"{acq}: {what} ({when})" for acq, listed in dates.items()
             for what, when in listed]
    dem = [one["dem"] for one in record.inputs.get("per_block", [record.inputs])
           if one.get("dem")]
    parts += [f"DEM: {Path(d).name}" for d in dict.fromkeys(dem)]
    return (f"Cloud-free reconstruction by decloud {__version__}, method {method}, "
            f"from {'; '.join(parts) or 'no input'}")


def _raster_band(dtype: str, nodata: float | None, scale: float | None = None) -> RasterBand:
    return RasterBand.create(data_type=DataType(dtype), nodata=nodata, scale=scale)


def build_item(record: RunRecord, *, nodata: Mapping[str, float | None] | None = None,
               dtypes: Mapping[str, str] | None = None,
               band_names: Mapping[str, Sequence[str]] | None = None) -> pystac.Item:
    """The STAC item of one engine output (hrefs relative to the output's folder).

    Args:
        record: The run's completion record (outputs, grid, method, inputs).
        nodata: Nodata of each output layer (raster extension); none when absent.
        dtypes: numpy dtype name of each output layer (raster extension).
        band_names: Band names of each output layer (``reflectance``: ESA names).

    Returns:
        The item, without a self link.

    Raises:
        StacError: The record has no reflectance output.
    """
    if "reflectance" not in record.outputs:
        raise StacError("the record names no reflectance output", field="outputs")
    out = Path(record.outputs["reflectance"])
    crs = CRS.from_user_input(record.grid["crs"])
    epsg = crs.to_epsg()
    transform = Affine(*record.grid["transform"][:6])
    width, height = int(record.grid["width"]), int(record.grid["height"])
    geometry, bbox = _footprint(crs, transform, width, height)
    dates = _acquisition_dates(record.inputs)
    every = sorted({_parse(when) for listed in dates.values() for _, when in listed})
    nominal = _nominal(record, dates) or (every[0] if every else _parse(record.finished))
    start, end = (min([nominal, *every]), max([nominal, *every]))
    item = pystac.Item(id=out.stem, geometry=geometry, bbox=bbox, datetime=nominal,
                       start_datetime=start, end_datetime=end,
                       properties={"created": _parse(record.finished).isoformat()
                                   if record.finished else None})
    if item.properties["created"] is None:
        del item.properties["created"]

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:  # a CRS without an EPSG code is described in full
        proj.code = None
        proj.wkt2 = crs.to_wkt(version="WKT2_2019")
    proj.shape = [height, width]
    proj.transform = [float(v) for v in record.grid["transform"][:6]]
    left, top = transform * (0, 0)
    right, bottom = transform * (width, height)
    proj.bbox = [min(left, right), min(top, bottom), max(left, right), max(top, bottom)]

    checksum = record.method.get("model_checksum")
    item.stac_extensions.append(PROCESSING_SCHEMA)
    item.properties.update({
        "processing:software": {"decloud": record.software},
        "processing:level": "L3",
        "processing:facility": "decloud",
        "processing:lineage": _lineage(record, dates),
        "processing:expression": {"format": "decloud-method", "expression": {
            **record.method, "model_checksum": checksum or None}},
    })

    nodata = dict(nodata or {})
    dtypes = dict(dtypes or {})
    band_names = dict(band_names or {})
    for role, file in {**record.outputs, "record": str(_record_of(out))}.items():
        href = f"./{Path(file).name}"
        if role == "record":
            item.add_asset(role, pystac.Asset(href, media_type=pystac.MediaType.JSON,
                                              roles=_ROLES[role], title="Completion record"))
            continue
        asset = pystac.Asset(href, media_type=pystac.MediaType.COG,
                             roles=_ROLES.get(role, ["metadata"]), title=role)
        item.add_asset(role, asset)
        names = list(band_names.get(role, []))
        if role == "reflectance" and names:
            EOExtension.ext(asset, add_if_missing=True).bands = [
                Band.create(name=b, common_name=S2_BAND_INFO[b][0],
                            center_wavelength=S2_BAND_INFO[b][1])
                if b in S2_BAND_INFO else Band.create(name=b) for b in names]
        if role in dtypes:
            scale = _REFLECTANCE_SCALE if role == "reflectance" else None
            RasterExtension.ext(asset, add_if_missing=True).bands = [
                _raster_band(dtypes[role], nodata.get(role), scale)
                for _ in range(max(len(names), 1))]
    return item


def _record_of(out: Path) -> Path:
    # The engine's rule (record_path), restated: importing the engine here would load Keras.
    return out.with_suffix(".json")


def _write_json(path: Path, content: Mapping[str, Any], overwrite: bool) -> None:
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(content, indent=2))


def write_item(record: RunRecord, *, overwrite: bool = False,
               nodata: Mapping[str, float | None] | None = None,
               dtypes: Mapping[str, str] | None = None,
               band_names: Mapping[str, Sequence[str]] | None = None) -> Path:
    """Write the STAC item of an output next to it, atomically (:func:`item_path`).

    Args:
        record: The run's completion record.
        overwrite: Replace an existing item.
        nodata: See :func:`build_item`.
        dtypes: See :func:`build_item`.
        band_names: See :func:`build_item`.

    Returns:
        The item's path.

    Raises:
        StacError: See :func:`build_item`.
        OutputExistsError: The item exists and ``overwrite`` is off.
    """
    item = build_item(record, nodata=nodata, dtypes=dtypes, band_names=band_names)
    path = item_path(record.outputs["reflectance"])
    _write_json(path, item.to_dict(include_self_link=False, transform_hrefs=False), overwrite)
    return path


def _read_item(path: Path) -> pystac.Item:
    try:
        return pystac.Item.from_dict(json.loads(path.read_text()), migrate=False)
    except OSError as err:
        raise StacError(f"cannot read the item: {err.strerror}", path=path) from err
    except (json.JSONDecodeError, KeyError, ValueError, pystac.STACError) as err:
        raise StacError(f"not a STAC item: {err}", path=path) from err


def write_collection(folder: str | Path, items: Iterable[str | Path] | str | None = None, *,
                     collection_id: str | None = None, description: str | None = None,
                     overwrite: bool = True) -> Path:
    """Write a STAC collection of the items in a folder (a time series), atomically.

    The collection ``<folder>/collection.json`` has the items' spatial extent (the
    union of their bboxes, EPSG:4326) and temporal extent (their first start and last
    end), and relative ``item`` links; each item gets ``collection``, ``parent`` and
    ``root`` links back to it and its ``collection`` field (rewritten atomically).

    Args:
        folder: The folder the collection is written to; the items must be in it or
            under it (links are relative).
        items: Item files, or a glob pattern relative to ``folder``; every
            ``*.stac.json`` under ``folder`` (recursively) when None.
        collection_id: The collection's id (the folder's name when None).
        description: Its description (a generic one naming the items when None).
        overwrite: Replace an existing collection (a rerun updates it).

    Returns:
        The collection's path.

    Raises:
        StacError: No item found, an item unreadable or outside the folder.
        OutputExistsError: The collection exists and ``overwrite`` is off.
    """
    folder = Path(folder).resolve()
    if items is None or isinstance(items, str):
        pattern = items or f"**/*{ITEM_SUFFIX}"
        paths = sorted(folder.glob(pattern))
    else:
        paths = sorted(Path(p).resolve() for p in items)
    if not paths:
        raise StacError(f"no STAC item ({items or '*' + ITEM_SUFFIX}) in the folder",
                        path=folder, field="items")
    loaded: list[tuple[Path, pystac.Item]] = []
    for path in paths:
        if not path.is_relative_to(folder):
            raise StacError(f"the item is outside the collection's folder {folder}",
                            path=path, field="items")
        loaded.append((path, _read_item(path)))
    ids = [item.id for _, item in loaded]
    if len(set(ids)) != len(ids):
        raise StacError(f"item ids repeat: {sorted(i for i in ids if ids.count(i) > 1)}",
                        path=folder, field="items")
    bboxes = np.array([item.bbox for _, item in loaded if item.bbox is not None], dtype=float)
    spatial = [float(bboxes[:, 0].min()), float(bboxes[:, 1].min()),
               float(bboxes[:, 2].max()), float(bboxes[:, 3].max())]
    starts, ends = [], []
    for _, item in loaded:
        props = item.properties
        starts.append(_parse(props.get("start_datetime") or props["datetime"]))
        ends.append(_parse(props.get("end_datetime") or props["datetime"]))
    cid = collection_id or folder.name
    collection = pystac.Collection(
        id=cid,
        description=description or f"decloud outputs: {len(loaded)} cloud-free images",
        extent=pystac.Extent(pystac.SpatialExtent([spatial]),
                             pystac.TemporalExtent([[min(starts), max(ends)]])),
        license="other",
        stac_extensions=[],
    )
    target = folder / COLLECTION_NAME
    out = collection.to_dict(include_self_link=False, transform_hrefs=False)
    out["links"] = [{"rel": "root", "href": f"./{COLLECTION_NAME}",
                     "type": pystac.MediaType.JSON}]
    out["links"] += [{"rel": "item", "href": f"./{path.relative_to(folder).as_posix()}",
                      "type": pystac.MediaType.GEOJSON, "title": item.id}
                     for path, item in loaded]
    _write_json(target, out, overwrite)
    for path, item in loaded:
        back = Path(*[".."] * (len(path.relative_to(folder).parts) - 1), COLLECTION_NAME)
        href = back.as_posix() if back.parts[0] == ".." else f"./{back.as_posix()}"
        content = item.to_dict(include_self_link=False, transform_hrefs=False)
        content["collection"] = cid
        content["links"] = [link for link in content["links"]
                            if link["rel"] not in ("collection", "parent", "root")]
        content["links"] += [{"rel": rel, "href": href, "type": pystac.MediaType.JSON}
                             for rel in ("collection", "parent", "root")]
        _write_json(path, content, True)
    return target
