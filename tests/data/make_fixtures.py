"""Build the product-layout test fixtures of ``decloud`` from real Earth-observation arrays.

Every pixel value written here is real (Copernicus Sentinel-1/-2 data shipped with eo-learn,
openeo-gfmap, bigearthnet-common and ukis-csmask, see ``tests/data/README.md``); what is
reconstructed is the product *packaging*: folder and file names, metadata XML, orbit numbers,
times of day, the PB >= 04.00 radiometric offset and a few simulated no-data areas.

Usage (from the repository root)::

    python tests/data/make_fixtures.py --shared ../shared/data --out tests/data/archive

The output is deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine, from_origin
from rasterio.warp import reproject, transform, transform_bounds

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"

# GDAL would otherwise drop .aux.xml side-cars next to the JP2 files.
GDAL_ENV: dict[str, Any] = {"GDAL_PAM_ENABLED": "NO"}
GTIFF_OPTS: dict[str, Any] = {"driver": "GTiff", "compress": "DEFLATE"}
JP2_OPTS: dict[str, Any] = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}

L2A_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd"
S2_BANDS_13 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S2_PERIOD_S = 10 * 86400 / 143  # 143 orbits per 10-day repeat cycle

# Real granule names used as anchors for absolute orbit numbers (PSD: "A<abs orbit>").
S2_ORBIT_ANCHORS: dict[str, tuple[dt.datetime, int]] = {
    # S2A_MSIL2A_20230405T105031_N0509_R051_T31UFS_... / L2A_T31UFS_A040660_20230405T105026
    "S2A": (dt.datetime(2023, 4, 5, 10, 50, 31), 40660),
    # S2B_MSIL2A_20230606T085559_N0509_R007_T35TNH_... / L2A_T35TNH_A032637_20230606T090233
    "S2B": (dt.datetime(2023, 6, 6, 8, 55, 59), 32637),
}
# relative = (absolute + offset) % 143 + 1, offsets checked against the anchors above.
S2_REL_OFFSET = {"S2A": 2, "S2B": -27}

Array = npt.NDArray[Any]


# --------------------------------------------------------------------------- helpers


def block_mean(a: Array, f: int) -> Array:
    """Average non-overlapping ``f`` x ``f`` blocks (float64 result).

    Args:
        a: 2-D array whose shape is a multiple of ``f``.
        f: Block size in pixels.

    Returns:
        The block means, shape ``(rows // f, cols // f)``.
    """
    r, c = a.shape
    assert r % f == 0 and c % f == 0, (a.shape, f)
    return a.astype(np.float64).reshape(r // f, f, c // f, f).mean(axis=(1, 3))


def block_any(a: Array, f: int) -> Array:
    """True where any pixel of an ``f`` x ``f`` block is true."""
    r, c = a.shape
    return np.asarray(a.reshape(r // f, f, c // f, f).any(axis=(1, 3)))


def block_or(a: Array, f: int) -> Array:
    """Bitwise OR of the unsigned integer values of each ``f`` x ``f`` block."""
    r, c = a.shape
    blocks = a.reshape(r // f, f, c // f, f)
    return np.bitwise_or.reduce(np.bitwise_or.reduce(blocks, axis=3), axis=1)


def downsample_dn(dn: Array, f: int, nodata: int) -> Array:
    """Block-average integer DNs; a block touching ``nodata`` becomes ``nodata``.

    Args:
        dn: 2-D integer DN array.
        f: Block size in pixels.
        nodata: The no-data DN.

    Returns:
        Rounded block means in the input dtype.
    """
    out = np.rint(block_mean(dn, f)).astype(dn.dtype)
    out[block_any(dn == nodata, f)] = nodata
    return out


def write_raster(
    path: Path,
    data: Array,
    crs: CRS,
    affine: Affine,
    *,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    jp2: bool = False,
) -> None:
    """Write a (bands, rows, cols) or (rows, cols) array and check it reads back identically.

    The read-back guards the "lossless" claim of the JP2 files (QUALITY=100, REVERSIBLE=YES)
    and catches any silent dtype or georeferencing change.

    Args:
        path: Output file.
        data: Pixel values; 2-D arrays are written as one band.
        crs: Coordinate reference system.
        affine: Pixel-corner affine transform.
        nodata: No-data value stored in the file, if any (not possible for JP2 here).
        descriptions: Per-band descriptions.
        jp2: Write JPEG 2000 (lossless) instead of a DEFLATE GeoTIFF.

    Raises:
        RuntimeError: If the file does not read back exactly.
    """
    arr = data[np.newaxis] if data.ndim == 2 else data
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = dict(JP2_OPTS if jp2 else GTIFF_OPTS)
    profile.update(
        width=arr.shape[2],
        height=arr.shape[1],
        count=arr.shape[0],
        dtype=arr.dtype.name,
        crs=crs,
        transform=affine,
        nodata=nodata,
    )
    with rasterio.Env(**GDAL_ENV):
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(arr)
            if descriptions is not None:
                for i, text in enumerate(descriptions, start=1):
                    ds.set_band_description(i, text)
        with rasterio.open(path) as ds:
            back = ds.read()
            ok = (
                back.dtype == arr.dtype
                and np.array_equal(back, arr, equal_nan=arr.dtype.kind == "f")
                and ds.crs == crs
                and ds.transform.almost_equals(affine, precision=1e-9)
                and (jp2 or ds.nodata == nodata)
            )
    if not ok:
        raise RuntimeError(f"{path} does not read back as written")


def write_xml(path: Path, root: ET.Element) -> None:
    """Write an indented UTF-8 XML document with declaration."""
    ET.indent(root, space="  ")
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ET.tostring(root, encoding="UTF-8", xml_declaration=False)
    path.write_bytes(b'<?xml version="1.0" encoding="UTF-8"?>\n' + body + b"\n")


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    """Append a child element with optional text and attributes."""
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def savez_deterministic(path: Path, **arrays: Array) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps, so the bytes are stable."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def s2_absolute_orbit(platform: str, when: dt.datetime, relative: int) -> int:
    """Absolute orbit number of a Sentinel-2 pass, from a real anchor granule.

    Args:
        platform: ``"S2A"`` or ``"S2B"``.
        when: Approximate sensing time (UTC).
        relative: Relative orbit of the pass (1..143).

    Returns:
        The absolute orbit consistent with ``relative`` that is nearest in time to the
        anchor-based estimate.

    Raises:
        ValueError: If no matching orbit lies within a few orbits of the estimate.
    """
    anchor_time, anchor_abs = S2_ORBIT_ANCHORS[platform]
    estimate = anchor_abs + (when - anchor_time).total_seconds() / S2_PERIOD_S
    base = round(estimate)
    cands = [
        a
        for a in range(base - 72, base + 73)
        if (a + S2_REL_OFFSET[platform]) % 143 + 1 == relative
    ]
    best = min(cands, key=lambda a: abs(a - estimate))
    if abs(best - estimate) > 3:
        raise ValueError(f"{platform} R{relative:03d} is not flying at {when} ({estimate:.1f})")
    return best


def s1_relative_orbit(platform: str, absolute: int) -> int:
    """Sentinel-1 relative orbit (1..175) from the absolute orbit."""
    offset = {"S1A": 73, "S1B": 27}[platform]
    return (absolute - offset) % 175 + 1


def s1_direction(when: dt.datetime, lon: float) -> str:
    """Pass direction from local solar time: S1 descends at ~06:00, ascends at ~18:00."""
    local_h = (when.hour + when.minute / 60 + lon / 15) % 24
    return "DES" if local_h < 12 else "ASC"


def dn_to_linear(db: Array) -> Array:
    """Convert sigma0 in dB to linear power (float32)."""
    return np.power(10.0, db.astype(np.float64) / 10.0).astype(np.float32)


def pick_window(
    msk: Array, size: int, stride: int, exclude: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Choose a deterministic window of the csmask mask with realistic cloud and shadow cover.

    Candidates on a ``stride`` grid need 10-40 % cloud (4) and >= 2 % shadow (0); the one
    closest to 25 % cloud and 10 % shadow wins (ties: top-most, then left-most).

    Args:
        msk: 2-D csmask class mask.
        size: Window side in pixels.
        stride: Step between candidate windows.
        exclude: Top-left corner of a window the result must not overlap.

    Returns:
        Row and column of the window's top-left pixel.
    """
    best: tuple[float, int, int] | None = None
    for r in range(0, msk.shape[0] - size + 1, stride):
        for c in range(0, msk.shape[1] - size + 1, stride):
            if exclude and abs(r - exclude[0]) < size and abs(c - exclude[1]) < size:
                continue
            w = msk[r : r + size, c : c + size]
            cloud, shadow = float((w == 4).mean()), float((w == 0).mean())
            if not (0.10 <= cloud <= 0.40 and shadow >= 0.02):
                continue
            score = abs(cloud - 0.25) + abs(shadow - 0.10)
            if best is None or score < best[0]:
                best = (score, r, c)
    assert best is not None
    return best[1], best[2]


# --------------------------------------------------------------------------- SAFE writer


@dataclass
class SafeSpec:
    """Everything needed to write one (reduced) Sentinel-2 L2A SAFE product."""

    platform: str  # "S2A" or "S2B"
    tile: str  # e.g. "T29UPU"
    start: dt.datetime  # datatake sensing start (UTC), also the file-name time
    relative_orbit: int
    baseline: str  # e.g. "04.00"
    generation: dt.datetime  # product discriminator
    crs: CRS
    corner: tuple[float, float]  # upper-left x, y
    bands: dict[int, dict[str, Array]] = field(default_factory=dict)  # res -> band -> DN
    scl: Array | None = None  # 20 m

    @property
    def pb_code(self) -> str:
        """Baseline as in the product name, e.g. ``N0400``."""
        return "N" + self.baseline.replace(".", "")

    @property
    def name(self) -> str:
        """SAFE folder name."""
        return (
            f"{self.platform}_MSIL2A_{self.start:%Y%m%dT%H%M%S}_{self.pb_code}"
            f"_R{self.relative_orbit:03d}_{self.tile}_{self.generation:%Y%m%dT%H%M%S}.SAFE"
        )

    @property
    def absolute_orbit(self) -> int:
        """Absolute orbit derived from the real anchors."""
        return s2_absolute_orbit(self.platform, self.start, self.relative_orbit)

    @property
    def granule(self) -> str:
        """Granule folder name (``L2A_<tile>_A<abs>_<start>``)."""
        return f"L2A_{self.tile}_A{self.absolute_orbit:06d}_{self.start:%Y%m%dT%H%M%S}"


def write_safe(spec: SafeSpec, tile_dir: Path) -> Path:
    """Write a SAFE product: JP2 bands, SCL and ``MTD_MSIL2A.xml``.

    Args:
        spec: Product description and pixel arrays.
        tile_dir: Folder receiving the ``.SAFE`` directory.

    Returns:
        The SAFE directory.
    """
    root_dir = tile_dir / spec.name
    img_dir = Path("GRANULE") / spec.granule / "IMG_DATA"
    stamp = f"{spec.start:%Y%m%dT%H%M%S}"
    image_files: list[str] = []
    layers = []  # same order as a real product: by resolution, bands, then SCL at 20 m
    for res in sorted(set(spec.bands) | ({20} if spec.scl is not None else set())):
        layers += [(res, b, a) for b, a in spec.bands.get(res, {}).items()]
        if res == 20 and spec.scl is not None:
            layers.append((20, "SCL", spec.scl))
    for res, band, arr in layers:
        rel = img_dir / f"R{res}m" / f"{spec.tile}_{stamp}_{band}_{res}m"
        affine = from_origin(spec.corner[0], spec.corner[1], res, res)
        write_raster(root_dir / rel.with_suffix(".jp2"), arr, spec.crs, affine, jp2=True)
        image_files.append(rel.as_posix())

    ET.register_namespace("n1", L2A_NS)
    root = ET.Element(f"{{{L2A_NS}}}Level-2A_User_Product")
    general = sub(root, f"{{{L2A_NS}}}General_Info")
    info = sub(general, "Product_Info")
    start = f"{spec.start:%Y-%m-%dT%H:%M:%S}.{spec.start.microsecond // 1000:03d}Z"
    sub(info, "PRODUCT_START_TIME", start)
    sub(info, "PRODUCT_STOP_TIME", start)
    sub(info, "PRODUCT_URI", spec.name)
    sub(info, "PROCESSING_LEVEL", "Level-2A")
    sub(info, "PRODUCT_TYPE", "S2MSI2A")
    sub(info, "PROCESSING_BASELINE", spec.baseline)
    sub(info, "GENERATION_TIME", f"{spec.generation:%Y-%m-%dT%H:%M:%S}.000000Z")
    pb = spec.baseline
    take = sub(
        info,
        "Datatake",
        datatakeIdentifier=f"G{spec.platform}_{stamp}_{spec.absolute_orbit:06d}_N{pb}",
    )
    sub(take, "SPACECRAFT_NAME", f"Sentinel-{spec.platform[1:]}")
    sub(take, "DATATAKE_TYPE", "INS-NOBS")
    sub(take, "DATATAKE_SENSING_START", start)
    sub(take, "SENSING_ORBIT_NUMBER", str(spec.relative_orbit))
    sub(take, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    gen = f"{spec.generation:%Y%m%dT%H%M%S}"
    granule = sub(
        sub(sub(info, "Product_Organisation"), "Granule_List"),
        "Granule",
        datastripIdentifier=f"{spec.platform}_OPER_MSI_L2A_DS_2{spec.platform[2]}PS_{gen}"
        f"_S{stamp}_N{pb}",
        granuleIdentifier=f"{spec.platform}_OPER_MSI_L2A_TL_2{spec.platform[2]}PS_{gen}"
        f"_A{spec.absolute_orbit:06d}_{spec.tile}_N{pb}",
        imageFormat="JPEG2000",
    )
    for rel_path in image_files:
        sub(granule, "IMAGE_FILE", rel_path)

    chars = sub(general, "Product_Image_Characteristics")
    for text, index in (("NODATA", "0"), ("SATURATED", "65535")):
        sv = sub(chars, "Special_Values")
        sub(sv, "SPECIAL_VALUE_TEXT", text)
        sub(sv, "SPECIAL_VALUE_INDEX", index)
    quant = sub(chars, "QUANTIFICATION_VALUES_LIST")
    sub(quant, "BOA_QUANTIFICATION_VALUE", "10000", unit="none")
    sub(quant, "AOT_QUANTIFICATION_VALUE", "1000.0", unit="none")
    sub(quant, "WVP_QUANTIFICATION_VALUE", "1000.0", unit="cm")
    if spec.baseline >= "04.00":  # the offset list only exists from PB 04.00 on
        offsets = sub(chars, "BOA_ADD_OFFSET_VALUES_LIST")
        for i in range(len(S2_BANDS_13)):
            sub(offsets, "BOA_ADD_OFFSET", "-1000", band_id=str(i))
    spectral = sub(chars, "Spectral_Information_List")
    for i, band in enumerate(S2_BANDS_13):
        sub(spectral, "Spectral_Information", bandId=str(i), physicalBand=band)
    write_xml(root_dir / "MTD_MSIL2A.xml", root)
    return root_dir


# --------------------------------------------------------------------------- A. THEIA


THEIA_CRS = CRS.from_epsg(32633)
THEIA_CORNER = (465180.0, 5080260.0)  # exact S2 10 m grid of tile T33TVM
THEIA_10M = ("B2", "B3", "B4", "B8")
THEIA_20M = ("B5", "B6", "B7", "B8A", "B11", "B12")
THEIA_NODATA = -10000
DEM_EDGE_PAD = 5  # source pixels replicated around the 1 km square before warping
SWATH_EDGE_COLS = 12  # simulated no-data strip on the last date (10 m columns)


def build_theia(shared: Path, out: Path) -> list[str]:
    """Write five MUSCATE L2A products and the EPSG:4326 DEM for tile T33TVM.

    Args:
        shared: Shared data root.
        out: Archive root.

    Returns:
        The product names.
    """
    bundle = np.load(shared / "eolearn_slovenia" / "eolearn_bundle.npz")
    names = [str(b) for b in bundle["band_names"]]
    times = bundle["timestamps"][bundle["bands_time_index"]]
    n = 100  # drop the last (southernmost) of 101 rows to get 100 x 100
    refl = bundle["bands_l1c"][:, :n, :n, :]
    clm = bundle["clm"].reshape(bundle["clm"].shape[:3])[:, :n, :n]
    clp = bundle["clp"].reshape(bundle["clp"].shape[:3])[:, :n, :n].astype(np.float32)
    tidx = bundle["bands_time_index"]
    t10 = from_origin(*THEIA_CORNER, 10, 10)
    t20 = from_origin(*THEIA_CORNER, 20, 20)
    products = []
    for k, stamp in enumerate(times):
        when = dt.datetime.fromisoformat(str(stamp))
        name = f"SENTINEL2A_{when:%Y%m%d-%H%M%S}-000_L2A_T33TVM_D_V1-8"
        pdir = out / "S2" / "T33TVM" / name
        edge = np.zeros((n, n), dtype=bool)
        if k == len(times) - 1:
            edge[:, :SWATH_EDGE_COLS] = True
        c, p = clm[tidx[k]], clp[tidx[k]]
        clm_r1 = np.where(c == 1, 0b111, 0).astype(np.uint8)
        clm_r1[(c == 0) & (p >= 0.35) & (p < 0.4)] |= 0b10000  # derived "thin cloud" class
        clm_r1[edge] = 0
        for band in THEIA_10M + THEIA_20M:
            src = "B" + band[1:].zfill(2) if band != "B8A" else "B8A"
            dn = np.rint(refl[k, :, :, names.index(src)].astype(np.float64) * 10000)
            dn = dn.astype(np.int16)
            dn[edge] = THEIA_NODATA
            res, affine = (10, t10) if band in THEIA_10M else (20, t20)
            if res == 20:
                dn = downsample_dn(dn, 2, THEIA_NODATA)
            # The source holds one (TOA) reflectance only, so SRE is an exact copy of FRE.
            for kind in ("FRE", "SRE"):
                write_raster(
                    pdir / f"{name}_{kind}_{band}.tif", dn, THEIA_CRS, affine, nodata=THEIA_NODATA
                )
        masks = pdir / "MASKS"
        write_raster(masks / f"{name}_CLM_R1.tif", clm_r1, THEIA_CRS, t10)
        write_raster(masks / f"{name}_CLM_R2.tif", block_or(clm_r1, 2), THEIA_CRS, t20)
        edg = edge.astype(np.uint8)
        write_raster(masks / f"{name}_EDG_R1.tif", edg, THEIA_CRS, t10)
        write_raster(masks / f"{name}_EDG_R2.tif", block_or(edg, 2), THEIA_CRS, t20)
        write_muscate_mtd(pdir / f"{name}_MTD_ALL.xml", name, when)
        products.append(name)

    dem = bundle["dem"].reshape(bundle["dem"].shape[:2])[:n, :n].astype(np.float32)
    write_dem(out / "DEM" / "T33TVM.tif", dem, t10)
    return products


def write_muscate_mtd(path: Path, name: str, when: dt.datetime) -> None:
    """Write a small MUSCATE-style ``*_MTD_ALL.xml``."""
    root = ET.Element("Muscate_Metadata_Document")
    ident = sub(root, "Dataset_Identification")
    sub(ident, "IDENTIFIER", name)
    sub(ident, "AUTHORITY", "THEIA")
    sub(ident, "PRODUCER", "MUSCATE")
    chars = sub(root, "Product_Characteristics")
    sub(chars, "PRODUCT_ID", name)
    sub(chars, "ACQUISITION_DATE", f"{when:%Y-%m-%dT%H:%M:%S}.000Z")
    sub(chars, "PRODUCT_VERSION", "1.8")
    sub(chars, "PRODUCT_LEVEL", "L2A")
    sub(chars, "PLATFORM", "SENTINEL2A")
    sub(chars, "ORBIT_NUMBER", "122", type="Relative")
    geo = sub(sub(root, "Geoposition_Informations"), "Coordinate_Reference_System")
    sub(geo, "HORIZONTAL_CS_CODE", "32633")
    sub(geo, "HORIZONTAL_CS_NAME", "WGS 84 / UTM zone 33N")
    radio = sub(root, "Radiometric_Informations")
    sub(radio, "REFLECTANCE_QUANTIFICATION_VALUE", "10000")
    special = sub(radio, "Special_Values_List")
    sub(special, "SPECIAL_VALUE", str(THEIA_NODATA), name="nodata")
    write_xml(path, root)


def write_dem(path: Path, dem: Array, src_affine: Affine) -> None:
    """Reproject the UTM DEM to a 1 arc-second EPSG:4326 grid covering the square's bounds.

    Args:
        path: Output GeoTIFF.
        dem: DEM in metres on the 10 m UTM grid.
        src_affine: Transform of ``dem``.
    """
    arcsec = 1 / 3600
    rows, cols = dem.shape
    west, south, east, north = transform_bounds(
        THEIA_CRS,
        "EPSG:4326",
        *rasterio.transform.array_bounds(rows, cols, src_affine),
        densify_pts=21,
    )
    # Snap outwards to whole arc-seconds, like the SRTM/Copernicus DEM pixel lattice.
    w, s = math.floor(west * 3600), math.floor(south * 3600)
    e, nn = math.ceil(east * 3600), math.ceil(north * 3600)
    dst_affine = Affine(arcsec, 0, w / 3600, 0, -arcsec, nn / 3600)
    dst = np.full((nn - s, e - w), -32768, dtype=np.float32)
    # The lon/lat box pokes up to ~40 m out of the rotated UTM square; replicate the edge
    # pixels that far so the DEM covers the whole tile like a real DEM instead of holes.
    pad = DEM_EDGE_PAD
    padded = np.pad(dem, pad, mode="edge")
    reproject(
        padded,
        dst,
        src_transform=src_affine * Affine.translation(-pad, -pad),
        src_crs=THEIA_CRS,
        src_nodata=None,
        dst_transform=dst_affine,
        dst_crs=CRS.from_epsg(4326),
        dst_nodata=-32768,
        resampling=Resampling.bilinear,
    )
    if (dst == -32768).any():
        raise RuntimeError("DEM has holes: increase DEM_EDGE_PAD")
    write_raster(path, dst, CRS.from_epsg(4326), dst_affine, nodata=-32768)


# --------------------------------------------------------------------------- B. BigEarthNet SAFE


BEN_S2 = "bigearthnet_examples/BigEarthNet-S2-Example"
BEN_S1 = "bigearthnet_examples/BigEarthNet-S1-Example"
BEN_29UPU = "S2A_MSIL2A_20170617T113321_36_85"
BEN_33UUP = "S2A_MSIL2A_20170613T101031_87_48"
BEN_RES = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B09"),
}
CSMASK_TO_SCL = {4: 9, 0: 3, 3: 4, 1: 6}  # cloud->high prob., shadow, land->veg., water


def read_bigearthnet_s2(
    folder: Path,
) -> tuple[dict[int, dict[str, Array]], CRS, Affine, dict[str, Any]]:
    """Read the 12 single-band BigEarthNet GeoTIFFs and the labels metadata."""
    bands: dict[int, dict[str, Array]] = {}
    crs, corner = None, None
    for res, names in BEN_RES.items():
        bands[res] = {}
        for b in names:
            with rasterio.open(folder / f"{folder.name}_{b}.tif") as ds:
                bands[res][b] = ds.read(1)
                assert ds.res == (res, res)
                crs, corner = ds.crs, ds.transform
    assert crs is not None and corner is not None
    meta = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())
    return bands, crs, corner, meta


def build_bigearthnet_safes(shared: Path, out: Path) -> list[str]:
    """Write the PB 04.00 SAFE for T29UPU and the PB 02.05 SAFE for T33UUP.

    Args:
        shared: Shared data root.
        out: Archive root.

    Returns:
        The product names.
    """
    msk = np.load(shared / "csmask_cloudy" / "sentinel2.npz")["msk"][..., 0]
    win_a = pick_window(msk, 60, 30)
    win_b = pick_window(msk, 60, 30, exclude=win_a)
    names = []

    # --- T29UPU, PB 04.00: DN + 1000 and a full-class SCL with a no-data corner.
    bands, crs, aff, meta = read_bigearthnet_s2(shared / BEN_S2 / BEN_29UPU)
    rel = int(meta["tile_source"].split("_")[4][1:])
    m = msk[win_a[0] : win_a[0] + 60, win_a[1] : win_a[1] + 60]
    scl = np.full(m.shape, 5, dtype=np.uint8)
    for src, dst in CSMASK_TO_SCL.items():
        scl[m == src] = dst
    scl[:6, -6:] = 0  # simulated no-data corner (120 m x 120 m)
    out_bands: dict[int, dict[str, Array]] = {}
    for res, group in bands.items():
        out_bands[res] = {}
        k = 120 // res  # corner size in pixels at this resolution
        for b, a in group.items():
            dn = (a.astype(np.uint32) + 1000).astype(np.uint16)
            dn[:k, -k:] = 0
            out_bands[res][b] = dn
    spec = SafeSpec(
        platform="S2A",
        tile="T29UPU",
        start=dt.datetime(2017, 6, 17, 11, 33, 21, 26000),
        relative_orbit=rel,
        baseline="04.00",
        generation=dt.datetime(2017, 6, 17, 14, 0, 0),
        crs=crs,
        corner=(aff.c, aff.f),
        bands=out_bands,
        scl=scl,
    )
    names.append(write_safe(spec, out / "S2" / "T29UPU").name)

    # --- T33UUP, PB 02.05: DN unchanged, SCL all vegetation except transplanted cloud/shadow.
    bands, crs, aff, meta = read_bigearthnet_s2(shared / BEN_S2 / BEN_33UUP)
    rel = int(meta["tile_source"].split("_")[4][1:])
    m = msk[win_b[0] : win_b[0] + 60, win_b[1] : win_b[1] + 60]
    scl = np.full(m.shape, 4, dtype=np.uint8)
    scl[m == 4] = 9
    scl[m == 0] = 3
    spec = SafeSpec(
        platform="S2A",
        tile="T33UUP",
        start=dt.datetime(2017, 6, 13, 10, 10, 31, 26000),
        relative_orbit=rel,
        baseline="02.05",
        generation=dt.datetime(2017, 6, 13, 14, 0, 0),
        crs=crs,
        corner=(aff.c, aff.f),
        bands=bands,
        scl=scl,
    )
    names.append(write_safe(spec, out / "S2" / "T33UUP").name)
    print(f"  SCL windows from csmask msk (row, col): T29UPU {win_a}, T33UUP {win_b}")
    return names


# --------------------------------------------------------------------------- C. S1Tiling


def build_s1_bigearthnet(shared: Path, out: Path) -> list[str]:
    """Write S1Tiling-named linear sigma0 files from the two BigEarthNet S1 patches.

    Args:
        shared: Shared data root.
        out: Archive root.

    Returns:
        The written file names.
    """
    written = []
    for patch, stack in (
        ("S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85", False),
        ("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48", True),
    ):
        folder = shared / BEN_S1 / patch
        meta = json.loads((folder / f"{patch}_labels_metadata.json").read_text())
        platform, *_, absolute = meta["scene_source"].split("_")[:7]
        when = dt.datetime.fromisoformat(meta["acquisition_time"])
        pols = {}
        for pol in ("VV", "VH"):
            with rasterio.open(folder / f"{patch}_{pol}.tif") as ds:
                pols[pol] = dn_to_linear(ds.read(1))
                crs, aff = ds.crs, ds.transform
        lon, _ = transform(crs, "EPSG:4326", [aff.c + 600], [aff.f - 600])
        direction = s1_direction(when, lon[0])
        orbit = s1_relative_orbit(platform, int(absolute))
        tile = patch.split("_")[5]
        stem = f"{platform.lower()}_{tile}_{{pol}}_{direction}_{orbit:03d}_{when:%Y%m%dt%H%M%S}.tif"
        tdir = out / "S1" / f"T{tile}"
        if stack:
            fname = stem.format(pol="vvvh")
            write_raster(
                tdir / fname,
                np.stack([pols["VV"], pols["VH"]]),
                crs,
                aff,
                nodata=0,
                descriptions=("VV", "VH"),
            )
            written.append(fname)
        else:
            for pol, arr in pols.items():
                fname = stem.format(pol=pol.lower())
                write_raster(tdir / fname, arr, crs, aff, nodata=0, descriptions=(pol,))
                written.append(fname)
    return written


# Reconstructed Belgian S1A passes (direction, relative orbit, UTC time), one per 12-day class.
BELGIUM_S1_PASSES = (
    ("DES", 110, "055800"),
    ("ASC", 88, "172500"),
    ("DES", 37, "054200"),
    ("ASC", 161, "173300"),
    ("ASC", 15, "174100"),
)


def read_nc(path: Path) -> tuple[netCDF4.Dataset, list[dt.date], CRS, Affine]:
    """Open an openEO CF NetCDF and decode its time axis and 10 m grid."""
    ds = netCDF4.Dataset(path)
    ds.set_auto_maskandscale(False)
    units = ds["t"].units
    assert units.startswith("days since "), units
    epoch = dt.date.fromisoformat(units.removeprefix("days since ")[:10])
    dates = [epoch + dt.timedelta(days=int(v)) for v in ds["t"][:]]
    x, y = np.asarray(ds["x"][:]), np.asarray(ds["y"][:])
    assert np.all(np.diff(x) == 10) and np.all(np.diff(y) == -10), "expect north-up 10 m"
    crs = CRS.from_wkt(ds["crs"].crs_wkt)
    if crs.to_epsg() is not None:
        crs = CRS.from_epsg(crs.to_epsg())
    return ds, dates, crs, from_origin(x[0] - 5, y[0] + 5, 10, 10)


def nc_uint(ds: netCDF4.Dataset, name: str) -> Array:
    """Read a variable, honouring the ``_Unsigned`` convention of openEO int16 storage."""
    var = ds[name]
    raw = np.asarray(var[:])
    if getattr(var, "_Unsigned", "false") == "true":
        raw = raw.view(np.dtype(raw.dtype.str.replace("i", "u")))
    return raw


def build_s1_belgium(shared: Path, out: Path) -> list[tuple[str, str, int, str]]:
    """Write the 10 Belgian S1 dates as S1Tiling VV/VH files (orbits reconstructed).

    Args:
        shared: Shared data root.
        out: Archive root.

    Returns:
        One (date, direction, orbit, time) row per acquisition.
    """
    ds, dates, crs, aff = read_nc(shared / "gfmap_belgium" / "cdse_sentinel1_grd.nc")
    classes: list[int] = []  # 12-day residue classes in order of first appearance
    rows = []
    for k, day in enumerate(dates):
        cls = day.toordinal() % 12
        if cls not in classes:
            classes.append(cls)
        direction, orbit, hms = BELGIUM_S1_PASSES[classes.index(cls) % len(BELGIUM_S1_PASSES)]
        for pol in ("VV", "VH"):
            dn = nc_uint(ds, f"S1-SIGMA0-{pol}")[k].astype(np.float64)
            bad = (dn == 0) | (dn == 65534)
            with np.errstate(divide="ignore"):
                db = 20 * np.log10(dn) - 83
            lin = dn_to_linear(np.where(bad, 0.0, db))
            lin[bad] = 0
            fname = f"s1a_31UFS_{pol.lower()}_{direction}_{orbit:03d}_{day:%Y%m%d}t{hms}.tif"
            write_raster(
                out / "S1" / "T31UFS" / fname, lin, crs, aff, nodata=0, descriptions=(pol,)
            )
        rows.append((day.isoformat(), direction, orbit, hms))
    ds.close()
    return rows


# --------------------------------------------------------------------------- D. Belgian SAFE


# Reconstructed S2 schedule over T31UFS: R008 on the 04-02 series, R051 on the 04-05 series
# (3 days apart, as orbit 51 follows orbit 8 by 43 orbits); S2A/S2B alternate every 5 days.
# Start times follow real products of those orbits (S2A R051 2023-04-05 is real: T105031).
BELGIUM_S2_TIMES = {
    ("S2A", 8): "103641",
    ("S2B", 8): "103629",
    ("S2A", 51): "105031",
    ("S2B", 51): "104629",
}


def belgium_s2_pass(day: dt.date) -> tuple[str, int]:
    """Platform and relative orbit of a T31UFS date in April 2023 (reconstructed)."""
    offset = (day - dt.date(2023, 4, 5)).days
    if offset % 5 not in (0, 2):
        raise ValueError(f"no R008/R051 pass over T31UFS on {day}")
    orbit = 51 if offset % 5 == 0 else 8
    cycle = offset if orbit == 51 else offset + 3  # R008 precedes R051 of the same satellite
    return ("S2A" if cycle % 10 == 0 else "S2B"), orbit


def add_offset(stored: Array, factor: int) -> Array:
    """Block-average by ``factor``, then add 1000 back (PB >= 04.00 DN); 0 stays no-data.

    Args:
        stored: openEO values (offset already removed), 10 m.
        factor: Block size of the target resolution (1, 2 or 6).

    Returns:
        uint16 DNs as stored in a PB >= 04.00 product.
    """
    a = downsample_dn(stored, factor, 0) if factor > 1 else stored
    return np.where(a == 0, 0, a.astype(np.uint32) + 1000).astype(np.uint16)


def build_belgium_safes(shared: Path, out: Path) -> list[str]:
    """Write 12 partial-band PB 05.09 SAFE products for T31UFS.

    Args:
        shared: Shared data root.
        out: Archive root.

    Returns:
        The product names.
    """
    ds, dates, crs, aff = read_nc(shared / "gfmap_belgium" / "cdse_sentinel2_l2a.nc")
    cols = 60  # 60 x 66 px nests exactly into the 20 m (30 x 33) and 60 m (10 x 11) grids
    data = {b: nc_uint(ds, f"S2-L2A-{b}")[:, :, :cols] for b in ("B01", "B04", "B08", "B11", "SCL")}
    ds.close()
    names = []
    for k, day in enumerate(dates):
        platform, orbit = belgium_s2_pass(day)
        hms = BELGIUM_S2_TIMES[(platform, orbit)]
        start = dt.datetime.strptime(f"{day:%Y%m%d}{hms}", "%Y%m%d%H%M%S").replace(
            microsecond=24000
        )

        spec = SafeSpec(
            platform=platform,
            tile="T31UFS",
            start=start,
            relative_orbit=orbit,
            baseline="05.09",
            generation=dt.datetime.combine(day, dt.time(13, 0)),
            crs=crs,
            corner=(aff.c, aff.f),
            bands={
                10: {"B04": add_offset(data["B04"][k], 1), "B08": add_offset(data["B08"][k], 1)},
                20: {"B11": add_offset(data["B11"][k], 2)},
                60: {"B01": add_offset(data["B01"][k], 6)},
            },
            scl=data["SCL"][k][::2, ::2].astype(np.uint8),
        )
        names.append(write_safe(spec, out / "S2" / "T31UFS").name)
    return names


# --------------------------------------------------------------------------- E. csmask crop


def build_csmask(shared: Path, path: Path) -> tuple[int, int]:
    """Write a 256 x 256 crop of the csmask cloudy scene (uint16 DN) and its mask.

    Args:
        shared: Shared data root.
        path: Output ``.npz`` file.

    Returns:
        Row and column of the crop's top-left pixel in the source.
    """
    src = np.load(shared / "csmask_cloudy" / "sentinel2.npz")
    msk = src["msk"]
    r, c = pick_window(msk[..., 0], 256, 32)
    img = src["img"][r : r + 256, c : c + 256, :].astype(np.float64)
    savez_deterministic(
        path,
        img_dn=np.rint(img * 10000).astype(np.uint16),
        msk=msk[r : r + 256, c : c + 256, :],
        band_names=np.array(["B02", "B03", "B04", "B08", "B11", "B12"]),
    )
    return r, c


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help="shared data root (default: ../shared/data from the repo root)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "archive",
        help="archive output folder (default: tests/data/archive)",
    )
    parser.add_argument(
        "--csmask-npz",
        type=Path,
        default=None,
        help="csmask crop output (default: csmask_cloudy.npz next to --out)",
    )
    parser.add_argument("--force", action="store_true", help="replace existing outputs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build all fixtures; returns the process exit code."""
    args = parse_args(argv)
    out: Path = args.out.resolve()
    npz: Path = (args.csmask_npz or out.parent / "csmask_cloudy.npz").resolve()
    shared: Path = args.shared.resolve()
    if not (shared / "README.md").is_file():
        print(f"error: {shared} is not the shared data folder", file=sys.stderr)
        return 2
    for target in (out, npz):
        if target.exists() and not args.force:
            print(f"error: {target} exists (use --force to rebuild)", file=sys.stderr)
            return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target so the final rename stays on one file system.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        print("A. THEIA T33TVM:", *build_theia(shared, tmp), sep="\n  ")
        print("B. SAFE:", *build_bigearthnet_safes(shared, tmp), sep="\n  ")
        print("C. S1 BigEarthNet:", *build_s1_bigearthnet(shared, tmp), sep="\n  ")
        print("C. S1 Belgium (date, dir, orbit, time):", *build_s1_belgium(shared, tmp), sep="\n  ")
        print("D. SAFE T31UFS:", *build_belgium_safes(shared, tmp), sep="\n  ")
        tmp_npz = tmp / npz.name
        print("E. csmask crop at (row, col):", build_csmask(shared, tmp_npz))
        if out.exists():
            shutil.rmtree(out)
        tmp_npz.replace(npz)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"written {out} and {npz}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
