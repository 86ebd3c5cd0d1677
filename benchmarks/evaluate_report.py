"""A real ``decloud evaluate`` report, and its screenshot in headless Chromium.

Real data (``/work/shared/data/eolearn_slovenia``, eo-learn's example, MIT; contains
modified Copernicus Sentinel data): the clear L1C date 2015-08-30 is the truth; the
real s2cloudless mask of another date (2016-06-05, :data:`MASK_DATE`, 25 % cloud) is
cut into it; the "prediction" fills the cut with the nearest clear date
(2015-09-09) and keeps the truth elsewhere, as the engine's composite does, with the
matching quality layer. The four 10 m bands are written as decloud int16 GeoTIFFs
(the bundle's ~9.995 m pixels rounded to 10 m) and scored by ``decloud evaluate``.

Writes ``benchmarks/results/evaluate_report/`` (the evaluation's JSON, Markdown and
HTML) and the screenshot ``benchmarks/results/evaluate_report.png``. Run from the
repository root (about 20 s)::

    .venv/bin/python benchmarks/evaluate_report.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from decloud.keys import encode_s2

BUNDLE = Path("/work/shared/data/eolearn_slovenia/eolearn_bundle.npz")
RESULTS = Path(__file__).parent / "results"
#: Index in the bundle's 68 dates of the cloud mask cut into the truth (25 % cloud).
MASK_DATE = 20
#: The bundle's 13 bands: B02, B03, B04, B08 (10 m).
BANDS = {"B02": 1, "B03": 2, "B04": 3, "B08": 7}
TRUTH, NEAREST = 3, 4  # 2015-08-30 and 2015-09-09, both clear


def _write(path: Path, data: np.ndarray, names: list[str], dtype: str, nodata: int) -> None:
    h, w, c = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=dtype,
                       nodata=nodata, crs="EPSG:32633",
                       transform=from_origin(465181.0522, 5080254.6335, 10, 10)) as dst:
        dst.write(np.moveaxis(data, -1, 0))
        for i, name in enumerate(names):
            dst.set_band_description(i + 1, name)


def main() -> None:
    """Build the rasters, run ``decloud evaluate``, take the screenshot."""
    bundle = np.load(BUNDLE)
    index = list(BANDS.values())
    truth = bundle["bands_l1c"][TRUTH][..., index].astype(np.float64)
    nearest = bundle["bands_l1c"][NEAREST][..., index].astype(np.float64)
    cut = bundle["clm"][MASK_DATE].astype(bool)
    pred = np.where(cut[..., None], nearest, truth)
    quality = np.where(cut, 1, 0).astype(np.uint8)[..., None]
    out = RESULTS / "evaluate_report"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _write(work / "nearest_date.tif", encode_s2(pred), list(BANDS), "int16", -10000)
        _write(work / "truth_2015-08-30.tif", encode_s2(truth), list(BANDS), "int16", -10000)
        _write(work / "nearest_date_quality.tif", quality, ["quality"], "uint8", 255)
        cloudy = np.where(cut[..., None], np.nan, truth)  # the cut pixels as nodata
        _write(work / "cut_input.tif", encode_s2(cloudy), list(BANDS), "int16", -10000)
        decloud = Path(sys.executable).with_name("decloud")
        # Run in the scratch folder: the record names the rasters, not a temporary path.
        subprocess.run([str(decloud), "evaluate", "nearest_date.tif", "truth_2015-08-30.tif",
                        "--quality", "nearest_date_quality.tif", "--input", "cut_input.tif",
                        "--out", str(out.resolve()),
                        "--overwrite"], check=True, cwd=work)
        browser = shutil.which("chromium")
        if browser is None:
            raise SystemExit("no chromium: install the distribution's package")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                        f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000",
                        "--window-size=1240,1900",
                        f"--screenshot={RESULTS / 'evaluate_report.png'}",
                        (out / "evaluation.html").resolve().as_uri()],
                       check=True, capture_output=True)
    print(RESULTS / "evaluate_report.png")


if __name__ == "__main__":
    main()
