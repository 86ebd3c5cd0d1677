"""Build the Sentinel-2 L1C test fixtures of ``decloud`` from real L1C reflectances.

The pixel values are the real L1C top-of-atmosphere reflectances of the eo-learn Slovenia
bundle (``bands_l1c``, all 13 bands; see ``tests/data/README.md``, section E). What is
reconstructed is the packaging: a SAFE L1C folder with ``MTD_MSIL1C.xml`` and
``MTD_TL.xml``, and loose band files.

Usage (from the repository root)::

    python tests/data/make_l1c_fixtures.py --shared ../shared/data --out tests/data/l1c

The output is deterministic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import (
    DEFAULT_SHARED,
    S2_BANDS_13,
    THEIA_CORNER,
    THEIA_CRS,
    Array,
    block_mean,
    from_origin,
    s2_absolute_orbit,
    sub,
    write_raster,
    write_xml,
)

L1C_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-1C.xsd"
TILE_NS = "https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-1C_Tile_Metadata.xsd"
RES = {"B1": 60, "B2": 10, "B3": 10, "B4": 10, "B5": 20, "B6": 20, "B7": 20, "B8": 10,
       "B8A": 20, "B9": 60, "B10": 60, "B11": 20, "B12": 20}
#: SAFE product: the overcast date, PB 05.00 (reprocessed Collection-1, with the offset).
SAFE_DATE_INDEX = 1
#: Loose band files: the clear date, no MTD (before 2022-01-25, so no offset).
LOOSE_DATE_INDEX = 0
#: Made up: the datatake started this long before the tile was sensed.
DATATAKE_LEAD = dt.timedelta(seconds=130)
N = 100


def file_band(band: str) -> str:
    """``B1`` -> ``B01`` as in file names."""
    return band if band == "B8A" else f"B{int(band[1:]):02d}"


def band_dn(refl: Array, band: str, offset: int) -> Array:
    """uint16 DN of one band at its native resolution: reflectance x 10000 + offset."""
    dn = refl.astype(np.float64) * 10000
    res = RES[band]
    if res == 20:
        dn = block_mean(dn, 2)
    elif res == 60:
        # 100 px are not whole 60 m pixels: replicate the edge to 102 px, then 6 x 6 means.
        dn = block_mean(np.pad(dn, ((0, 2), (0, 2)), mode="edge"), 6)
    return np.clip(np.rint(dn) + offset, 1, 65535).astype(np.uint16)


def write_bands(folder: Path, prefix: str, refl: Array, names: Sequence[str],
                offset: int) -> None:
    """Write the 13 JP2 band files ``<prefix>_B<nn>.jp2``."""
    for band in S2_BANDS_13:
        res = RES[band]
        dn = band_dn(refl[:, :, names.index(file_band(band))], band, offset)
        write_raster(folder / f"{prefix}_{file_band(band)}.jp2", dn, THEIA_CRS,
                     from_origin(*THEIA_CORNER, res, res), jp2=True)


def write_mtd(path: Path, name: str, start: dt.datetime, baseline: str, orbit: int,
              granule: str, files: Sequence[str]) -> None:
    """Write a minimal ``MTD_MSIL1C.xml`` with the elements of a real one that decloud reads."""
    root = ET.Element(f"{{{L1C_NS}}}Level-1C_User_Product")
    info = sub(root, f"{{{L1C_NS}}}General_Info")
    product = sub(info, "Product_Info")
    stamp = f"{start:%Y-%m-%dT%H:%M:%S}.{start.microsecond // 1000:03d}Z"
    sub(product, "PRODUCT_START_TIME", stamp)
    sub(product, "PRODUCT_STOP_TIME", stamp)
    sub(product, "PRODUCT_URI", name + ".SAFE")
    sub(product, "PROCESSING_LEVEL", "Level-1C")
    sub(product, "PRODUCT_TYPE", "S2MSI1C")
    sub(product, "PROCESSING_BASELINE", baseline)
    sub(product, "GENERATION_TIME", "2023-01-01T00:00:00.000000Z")
    datatake = sub(product, "Datatake",
                   datatakeIdentifier=f"GS2A_{start:%Y%m%dT%H%M%S}_000706_N{baseline}")
    sub(datatake, "SPACECRAFT_NAME", "Sentinel-2A")
    sub(datatake, "DATATAKE_TYPE", "INS-NOBS")
    sub(datatake, "DATATAKE_SENSING_START", stamp)
    sub(datatake, "SENSING_ORBIT_NUMBER", str(orbit))
    sub(datatake, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    organisation = sub(product, "Product_Organisation")
    granule_list = sub(organisation, "Granule_List")
    node = sub(granule_list, "Granule", datastripIdentifier="made-up", granuleIdentifier=granule,
               imageFormat="JPEG2000")
    for file in files:
        sub(node, "IMAGE_FILE", file)
    image = sub(info, "Product_Image_Characteristics")
    for text, index in (("NODATA", "0"), ("SATURATED", "65535")):
        special = sub(image, "Special_Values")
        sub(special, "SPECIAL_VALUE_TEXT", text)
        sub(special, "SPECIAL_VALUE_INDEX", index)
    sub(image, "QUANTIFICATION_VALUE", "10000", unit="none")
    offsets = sub(image, "Radiometric_Offset_List")
    for i in range(13):
        sub(offsets, "RADIO_ADD_OFFSET", "-1000", band_id=str(i))
    spectral = sub(image, "Spectral_Information_List")
    for i, band in enumerate(S2_BANDS_13):
        sub(spectral, "Spectral_Information", bandId=str(i), physicalBand=band)
    write_xml(path, root)


def write_tile_mtd(path: Path, granule: str, sensed: dt.datetime) -> None:
    """Write a minimal granule ``MTD_TL.xml`` holding the tile's SENSING_TIME."""
    root = ET.Element(f"{{{TILE_NS}}}Level-1C_Tile_ID")
    info = sub(root, f"{{{TILE_NS}}}General_Info")
    sub(info, "TILE_ID", granule)
    sub(info, "SENSING_TIME", f"{sensed:%Y-%m-%dT%H:%M:%S}.{sensed.microsecond // 1000:03d}Z")
    write_xml(path, root)


def build(shared: Path, out: Path) -> list[str]:
    """Write the SAFE L1C product and the loose band files; return what was written."""
    bundle = np.load(shared / "eolearn_slovenia" / "eolearn_bundle.npz")
    names = [str(b) for b in bundle["band_names"]]
    times = bundle["timestamps"][bundle["bands_time_index"]]
    refl = bundle["bands_l1c"][:, :N, :N, :]
    written = []

    sensed = dt.datetime.fromisoformat(str(times[SAFE_DATE_INDEX]))
    start = sensed - DATATAKE_LEAD
    absolute = s2_absolute_orbit("S2A", start, 122)
    name = f"S2A_MSIL1C_{start:%Y%m%dT%H%M%S}_N0500_R122_T33TVM_20230101T000000"
    granule = f"L1C_T33TVM_A{absolute:06d}_{start:%Y%m%dT%H%M%S}"
    safe = out / f"{name}.SAFE"
    prefix = f"T33TVM_{start:%Y%m%dT%H%M%S}"
    img = safe / "GRANULE" / granule / "IMG_DATA"
    write_bands(img, prefix, refl[SAFE_DATE_INDEX], names, offset=1000)
    files = [f"GRANULE/{granule}/IMG_DATA/{prefix}_{file_band(b)}" for b in S2_BANDS_13]
    write_mtd(safe / "MTD_MSIL1C.xml", name, start, "05.00", 122, granule, files)
    write_tile_mtd(safe / "GRANULE" / granule / "MTD_TL.xml", granule, sensed)
    written.append(safe.name)

    loose_time = dt.datetime.fromisoformat(str(times[LOOSE_DATE_INDEX]))
    loose = out / "loose"
    write_bands(loose, f"T33TVM_{loose_time:%Y%m%dT%H%M%S}", refl[LOOSE_DATE_INDEX], names,
                offset=0)
    written.append(f"loose/T33TVM_{loose_time:%Y%m%dT%H%M%S}_B*.jp2")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "l1c")
    parser.add_argument("--force", action="store_true", help="Replace an existing --out.")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        parser.error(f"{args.out} exists (pass --force to replace it)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".l1c-", dir=args.out.parent))
    try:
        for item in build(args.shared, tmp):
            print(item)
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
