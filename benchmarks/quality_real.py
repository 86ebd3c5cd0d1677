"""The quality benchmark and the land-cover check on the real data of ``../shared/data``.

Every figure comes from real Sentinel-2 acquisitions and real cloud masks:

* **Slovenia**, tile T33TVM (eo-learn example data): the 5 THEIA dates of the sample
  archive (``tests/data/archive``, built from the bundle by ``tests/data/make_fixtures.py``),
  of which 2015-07-11, 08-30 and 09-09 are clear and are the references. Cut masks: the
  real s2cloudless masks (``clm``) of the bundle's other 63 dates of 2015-2017 (the
  identical fully cloudy masks counted once, the clear ones left out), and the real
  cumulus + shadow masks of ukis-csmask (``tests/data/csmask_cloudy.npz``) transplanted
  at 3 x 3 px per csmask pixel. Under the cut clouds the reflectance is the real value
  of the overcast 2015-07-31 acquisition at the same pixels (``overcast`` fill), under
  cut shadows the constant csmask shadow spectrum.
* **Belgium S2 + S1**, tile T31UFS (openEO GFMap test data): the 12 SAFE dates of April
  2023 in the sample archive (B04, B08 at 10 m), references 2023-04-05 and 04-15 (clear
  by SCL), cuts from the SCL masks of the other dates and the csmask windows; the demo's
  tiny OS2 model (``demo_output/model_msop_tiny/model.keras``, from ``make demo``) joins
  when it exists, with the demo's layout.
* **Belgium winter series** (``gfmap_belgium/s2_l2a_winter_bap_input.nc``): its 20 dates
  written as generic stacks (B02, B03, B04, B08 int16 + the real SCL as the mask) into a
  temporary archive; references 2022-11-11, 2023-01-16 and 02-11, cuts from the SCL of
  the other dates and the csmask windows.
* **Land cover** (Slovenia): a seeded random forest trained on 2015-07-11 with the
  bundle's LULC map, tested on 2015-08-30 cut by the partly cloudy s2cloudless masks
  and the csmask windows (``overcast`` fill), on pixels disjoint from the training ones.

Methods: every method of :data:`decloud.benchmark.quality.METHODS` that fits (nearest
clear date, per-pixel gap-filling, CNES decloud's patch-level gap-filling, and whatever
else is registered), raw and through the mask-guided composite.

Outputs in ``benchmarks/results/``: ``quality_<site>.{json,md,html}`` and
``quality_<site>_plot.png`` per site, ``landcover_slovenia.{json,md}``, and the summary
``quality_real.{json,md}`` (machine, load, commit, timings, goals) through
``benchmarks/_common.py``. Wall times on a loaded machine are noisy; the quality figures
are not (the run is deterministic).

Usage::

    python benchmarks/quality_real.py [--every N] [--raw] [--shared ../shared/data]

By default every 2nd Slovenian mask is cut and only the composites are scored (about
40 minutes of wall time on the loaded 2-core development machine); ``--every 1 --raw``
runs everything.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import yaml
from _common import (  # benchmarks/ is sys.path[0] when run as a script
    REPO_ROOT,
    RESULTS_DIR,
    git_commit,
    load_average,
    log,
    machine_info,
    machine_line,
    now_utc,
    write_results,
)
from rasterio.transform import from_origin

ARCHIVE = REPO_ROOT / "tests" / "data" / "archive"
CSMASK = REPO_ROOT / "tests" / "data" / "csmask_cloudy.npz"
DEMO_MODEL = REPO_ROOT / "demo_output" / "model_msop_tiny" / "model.keras"
DEMO_LAYOUT = REPO_ROOT / "pipelines" / "demo-os2-belgium.yaml"
#: The sample archive's T33TVM grid (tests/data/README.md, section A).
SLOVENIA_CORNER = (465180.0, 5080260.0)
SLOVENIA_ROWS = 100


def _load_cli_backend() -> None:
    """Keras without TensorFlow's start-up noise (patch_gapfill and models are Keras)."""
    from decloud.cli.backend import load_backend

    load_backend()


def slovenia_masks(bundle: Path, every: int) -> tuple[list[Any], list[Any]]:
    """The bundle's real s2cloudless masks of the dates without bands, as cut masks.

    Returns ``(all cuts, the partly cloudy ones)``, every ``every``-th in time order;
    the fully cloudy masks are one cut.
    """
    from decloud.benchmark.quality import cut_mask

    data = np.load(bundle)
    clm = data["clm"].reshape(data["clm"].shape[:3])[:, :SLOVENIA_ROWS].astype(bool)
    stamps = [str(t)[:10] for t in data["timestamps"]]
    with_bands = set(int(i) for i in data["bands_time_index"])
    cuts, partial, full_seen = [], [], False
    for k, mask in enumerate(clm):
        if k in with_bands or not mask.any():
            continue
        if mask.all():
            if full_seen:
                continue
            full_seen = True
        cut = cut_mask(f"{stamps[k]} s2cloudless", mask)
        cuts.append(cut)
        if not mask.all():
            partial.append(cut)
    return cuts[::every], partial[::every]


def lulc_raster(bundle: Path, folder: Path) -> Path:
    """The bundle's LULC map on the sample archive's T33TVM grid (first 100 rows)."""
    lulc = np.load(bundle)["lulc"].reshape(101, 100)[:SLOVENIA_ROWS].astype(np.uint8)
    path = folder / "lulc_T33TVM.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100, height=SLOVENIA_ROWS, count=1,
                       dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(*SLOVENIA_CORNER, 10, 10)) as dst:
        dst.write(lulc[np.newaxis])
    return path


def winter_archive(shared: Path, root: Path) -> Path:
    """The winter series as generic stacks with the real SCL as mask (tile T31UFS)."""
    import netCDF4

    ds = netCDF4.Dataset(shared / "gfmap_belgium" / "s2_l2a_winter_bap_input.nc")
    ds.set_auto_maskandscale(False)
    epoch = date.fromisoformat(ds["t"].units.removeprefix("days since ")[:10])
    x, y = np.asarray(ds["x"][:]), np.asarray(ds["y"][:])
    transform = from_origin(float(x[0]) - 5, float(y[0]) + 5, 10, 10)
    bands = ("B02", "B03", "B04", "B08")
    cube = {b: np.asarray(ds[f"S2-L2A-{b}"][:], dtype=np.float64) for b in bands}
    scl = np.asarray(ds["S2-L2A-SCL"][:], dtype=np.float64)
    folder = root / "S2" / "T31UFS"
    folder.mkdir(parents=True)
    for k, offset in enumerate(np.asarray(ds["t"][:])):
        day = epoch.toordinal() + int(offset)
        when = datetime.combine(date.fromordinal(day), datetime.min.time(), tzinfo=UTC)
        stem = f"winter_{when:%Y%m%d}"
        stack = np.stack([cube[b][k] for b in bands])
        bad = ~np.isfinite(stack).all(axis=0)
        dn = np.where(np.isfinite(stack), np.rint(stack), -10000).astype(np.int16)
        dn[:, bad] = -10000
        mask = np.where(np.isfinite(scl[k]), scl[k], 0).astype(np.uint8)
        mask[bad] = 0
        profile = {"driver": "GTiff", "width": dn.shape[2], "height": dn.shape[1],
                   "crs": "EPSG:32631", "transform": transform}
        with rasterio.open(folder / f"{stem}.tif", "w", count=4, dtype="int16",
                           nodata=-10000, **profile) as dst:
            dst.write(dn)
        with rasterio.open(folder / f"{stem}_scl.tif", "w", count=1, dtype="uint8",
                           **profile) as dst:
            dst.write(mask[np.newaxis])
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump({
            "platform": "S2", "tile": "T31UFS", "acquired": when.isoformat(),
            "bands": list(bands), "scale": 1e-4, "offset": 0.0, "nodata": -10000,
            "mask": {"path": f"{stem}_scl.tif", "cloud": [8, 9], "cirrus": [10],
                     "shadow": [3], "nodata": [0, 1]}}))
    ds.close()
    return root


def run_site(name: str, archive: Any, tile: str, references: Sequence[date], cuts: list[Any],
             work: Path, title: str, notes: str, *, fill: Any = None,
             extra: tuple[Any, ...] = (), overcast: Any = None,
             raw: bool = False) -> dict[str, Any]:
    """One site's quality benchmark; writes its files and returns its summary."""
    from decloud.benchmark.quality import (
        QualityOptions,
        check_reference,
        goal_check,
        masks_from_csmask,
        run_quality,
        summary_rows,
        write_quality_outputs,
    )
    from decloud.errors import CloudyReferenceError

    started = time.perf_counter()
    cpu = time.process_time()
    refs, refused = [], {}
    for day in references:
        product = archive.find_s2(tile, day)
        try:
            check_reference(product)
            refs.append(product)
        except CloudyReferenceError as err:
            refused[product.name] = str(err)
    grid = refs[0].grid()
    cuts = cuts + masks_from_csmask(CSMASK, grid.shape, count=3)
    options = QualityOptions(extra_methods=extra, raw=raw,
                             **({"fill": fill} if fill else {}))
    log(f"{name}: {len(refs)} references x {len(cuts)} cuts")
    result = run_quality(archive, tile, cuts, work / name, options, references=refs,
                         overcast=overcast,
                         on_row=lambda r: log(f"  {r['date']} {r['cut']:<26} "
                                              f"{r['cut_percent']:5.1f} % {r['label']}"))
    meta = {"tile": tile, "references": ", ".join(r.name for r in refs),
            "refused references": refused or "none", "cuts": len(cuts),
            "scenes": len(result.scenes), "fill": options.fill.describe()
            if overcast is None else "overcast (real cloud values), constant shadow"}
    paths = write_quality_outputs(result, RESULTS_DIR, name=f"quality_{name}", title=title,
                                  meta=meta, notes=notes)
    rows = summary_rows(result)
    return {"meta": meta, "goal": goal_check(rows), "summary": rows,
            "skipped": result.skipped, "files": sorted(p.name for p in paths.values()),
            "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


def main(argv: Sequence[str] | None = None) -> int:
    """Run every site, then the land-cover check; write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--every", type=int, default=2,
                        help="take every N-th Slovenian s2cloudless mask (1: all of them)")
    parser.add_argument("--raw", action="store_true",
                        help="also score each method's raw output (twice the time)")
    args = parser.parse_args(argv)
    bundle = args.shared / "eolearn_slovenia" / "eolearn_bundle.npz"
    if not bundle.is_file():
        print(f"error: {bundle} not found (give --shared)", file=sys.stderr)
        return 2
    _load_cli_backend()
    from decloud.archive import Archive
    from decloud.benchmark.landcover import landcover_benchmark
    from decloud.benchmark.quality import (
        GOAL,
        CutFill,
        ModelMethod,
        QualityOptions,
        masks_from_csmask,
    )
    from decloud.benchmark.quality import masks_from_archive as archive_masks

    load_before = load_average()
    started = time.perf_counter()
    archive = Archive.from_root(ARCHIVE)
    overcast_day = date(2015, 7, 31)
    overcast = archive.find_s2("T33TVM", overcast_day)
    sites: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="quality_real_") as tmp:
        work = Path(tmp)
        cuts, partial = slovenia_masks(bundle, max(1, args.every))
        sites["slovenia"] = run_site(
            "slovenia", archive, "T33TVM",
            [date(2015, 7, 11), date(2015, 8, 30), date(2015, 9, 9)], cuts, work,
            "Quality benchmark: Slovenia (T33TVM, eo-learn), real s2cloudless and csmask cuts",
            f"Real s2cloudless masks of the 63 other dates (2015-2017; every {args.every}"
            "-th of the cloudy ones, the fully cloudy ones counted once) and real csmask "
            "cumulus + shadow masks cut into the 3 clear dates; real overcast (2015-07-31) "
            "values "
            "under the cut clouds. patch_gapfill needs a date on both sides: it runs on "
            "2015-08-30 only, so the goal is checked on the common scenes.",
            overcast=lambda _ref: overcast, fill=CutFill("overcast", overcast), raw=args.raw)
        t31 = [p for p in archive.select_s2("T31UFS")]
        refs_be = [date(2023, 4, 5), date(2023, 4, 15)]
        ref_products = [archive.find_s2("T31UFS", d) for d in refs_be]
        extra = (ModelMethod(DEMO_MODEL, DEMO_LAYOUT, name="demo_msop_tiny"),) \
            if DEMO_MODEL.is_file() else ()
        sites["belgium"] = run_site(
            "belgium", archive, "T31UFS", refs_be,
            archive_masks(archive, "T31UFS", t31[0].grid(), exclude=ref_products), work,
            "Quality benchmark: Belgium S2 + S1 (T31UFS, GFMap), real SCL and csmask cuts",
            "SCL cloud/shadow masks of the other April 2023 dates and csmask windows cut "
            "into the clear 2023-04-05 and 04-15 (04-05 is refused: 1.3 % cloud by its SCL); "
            "B04, B08 only (the sample's 10 m bands); the demo's tiny OS2 model when make "
            "demo trained it. Every April date after 04-15 is cloudy by SCL (the fully "
            "cloudy masks are one cut): the patch-level baseline, which reads no mask, "
            "interpolates towards the clouds of its least cloudy t+1 patch, hence its very "
            "low PSNR; the per-pixel methods skip cloudy observations by their masks. The "
            "goal is met here because the baseline fails, not by a fine margin.",
            extra=extra, raw=args.raw)
        winter = Archive.from_root(winter_archive(args.shared, work / "winter_archive"))
        refs_w = [date(2022, 11, 11), date(2023, 1, 16), date(2023, 2, 11)]
        ref_w = [winter.find_s2("T31UFS", d) for d in refs_w]
        sites["winter"] = run_site(
            "winter", winter, "T31UFS", refs_w,
            archive_masks(winter, "T31UFS", ref_w[0].grid(), exclude=ref_w), work,
            "Quality benchmark: Belgium winter series (GFMap), real SCL and csmask cuts",
            "The 20 dates of 2022-11-01..2023-02-26 as generic stacks with the real SCL; "
            "SCL masks of the other dates (identical fully cloudy ones counted once) and "
            "csmask windows cut into the 3 clear dates. Most winter dates are cloudy, "
            "snow-covered or far away (SCL snow counts as clear), so every method is far "
            "from the truth here (PSNR below 20 dB); patch_gapfill again interpolates "
            "towards cloudy neighbours.",
            raw=args.raw)
        log("land cover")
        lc_started, lc_cpu = time.perf_counter(), time.process_time()
        train, test = archive.find_s2("T33TVM", date(2015, 7, 11)), \
            archive.find_s2("T33TVM", date(2015, 8, 30))
        lc_cuts = partial + masks_from_csmask(CSMASK, test.grid().shape, count=4)
        lc_paths = landcover_benchmark(archive, "T33TVM", train, test,
                                       lulc_raster(bundle, work), lc_cuts, RESULTS_DIR,
                                       QualityOptions(raw=False), overcast=overcast,
                                       name="landcover_slovenia")
        landcover = {"files": sorted(p.name for p in lc_paths.values()),
                     "wall_s": time.perf_counter() - lc_started,
                     "cpu_s": time.process_time() - lc_cpu}
    import json

    lc = json.loads((RESULTS_DIR / "landcover_slovenia.json").read_text())
    env = {"machine": machine_info(), "commit": git_commit(), "date": now_utc(),
           "load_before": load_before, "load_after": load_average(),
           "wall_s": time.perf_counter() - started, "every": args.every, "raw": args.raw}
    data = {"env": env, "goal": GOAL, "sites": {k: {kk: vv for kk, vv in v.items()
                                                     if kk != "summary"}
                                                 for k, v in sites.items()},
            "landcover": {**landcover, "verdict": lc["verdict"], "summary": lc["summary"]}}
    lines = ["# Quality benchmark on real clouds (issue 11)", "",
             f"- Machine: {machine_line(env['machine'])}; load {load_before} -> "
             f"{env['load_after']}", f"- Commit {env['commit']}, {env['date']}, "
             f"total {env['wall_s']:.0f} s wall", "",
             "| site | scenes | goal check (common scenes) | wall s | CPU s | details |",
             "|---|---|---|---|---|---|"]
    for name, site in sites.items():
        goal = site["goal"]
        verdict = "not evaluated" if goal.get("met") is None else (
            f"{'MET' if goal['met'] else 'NOT MET'}: {goal['best']} "
            f"{goal['best_psnr']:.2f} dB vs {goal['baseline']} "
            f"{goal['baseline_psnr']:.2f} dB ({goal['margin_db']:+.2f} dB)")
        lines.append(f"| {name} | {site['meta']['scenes']} | {verdict} | "
                     f"{site['wall_s']:.0f} | {site['cpu_s']:.0f} | [quality_{name}.md]"
                     f"(quality_{name}.md), [html](quality_{name}.html) |")
    lines += ["", GOAL, "", "## Land cover (Slovenia)", "", f"**{lc['verdict']}** "
              "([landcover_slovenia.md](landcover_slovenia.md))", ""]
    write_results("quality_real", data, "\n".join(lines))
    log(f"done in {env['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
