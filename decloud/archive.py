"""Discovery of an archive of S2 products, S1 images and DEMs.

Expected layout (every root optional; tile sub-folders optional too)::

    S2_ROOT/<TILE>/<product>      THEIA or SAFE folders or zips, stacks with sidecars
    S1_ROOT/<TILE>/*.tif          S1Tiling outputs
    DEM_ROOT/<TILE>.tif           one DEM per tile, any CRS

Every entry is tried; one that cannot be read is reported in
:attr:`Archive.problems` with the file and the reason, and the scan goes on. Readers
raise typed errors (:class:`~decloud.errors.DecloudError`); the errors a broken file can
still provoke in the libraries underneath (:data:`PRODUCT_FAULTS`: I/O, value, zip,
XML, GDAL errors) are caught by name too, so one bad product never stops a scan of
thousands. With ``check_files`` every band and mask file of each product is also
opened and its last block read (:func:`decloud.products.checks.check_files`), so a
truncated or deleted file is reported here rather than in ``stack``.

Each problem records the root it was found under (:attr:`ScanProblem.sensor`), so
that :meth:`Archive.broken_s1` and :meth:`Archive.broken_dems` can tell ``stack`` that
a source it would have used exists but cannot be read, which is not its absence.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import numpy as np
from rasterio.errors import RasterioError

from decloud.errors import DecloudError, NoProductError
from decloud.grid import RasterPool
from decloud.products import Dem, Product, S1Product, S2Product, open_product
from decloud.products.checks import check_files as check_product_files
from decloud.products.dem import dem_tile
from decloud.products.l1c import L1CBandFiles
from decloud.products.s1tiling import group_s1_files, parse_s1_name

__all__ = [
    "PRODUCT_FAULTS",
    "Archive",
    "ScanProblem",
    "fault_reason",
    "inventory_rows",
    "normalize_tile",
]

#: What one bad product can raise: decloud's typed errors, and the errors a broken
#: file can still provoke in the libraries underneath (caught by name, never broadly).
PRODUCT_FAULTS: tuple[type[Exception], ...] = (
    DecloudError, OSError, ValueError, ArithmeticError, KeyError, zipfile.BadZipFile,
    ParseError, RasterioError,
)


def fault_reason(entry: Path | str, err: Exception) -> str:
    """One line saying why ``entry`` failed: the file and element concerned, and the cause.

    A :class:`DecloudError` about another file than ``entry`` (the metadata inside a
    product) names that file; other exceptions are prefixed with their type.
    """
    if isinstance(err, DecloudError):
        where = err.path if err.path is not None and err.path != str(entry) else None
        field = f"[{err.field}] " if err.field else ""
        return f"{where + ': ' if where else ''}{field}{err.message}"
    return f"{type(err).__name__}: {err}"

_TILE = re.compile(r"^T?(\d{2}[A-Z]{3})$", re.IGNORECASE)
# Files that sit next to products and are not products themselves.
_SIDECARS = {".yaml", ".yml", ".xml", ".json", ".md", ".txt", ".aux", ".ovr", ".png", ".jpg"}


def normalize_tile(tile: str) -> str:
    """``31TEJ``, ``t31tej`` and ``T31TEJ`` all give ``T31TEJ``."""
    match = _TILE.match(tile.strip())
    if match is None:
        raise DecloudError(f"{tile!r} is not a Sentinel-2 tile id (like T31TEJ)", field="tile")
    return "T" + match[1].upper()


@dataclass(frozen=True)
class ScanProblem:
    """An archive entry that could not be used, and why."""

    path: Path
    reason: str
    #: The root it was found under: ``S2``, ``S1``, ``DEM`` ("" when not known).
    sensor: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Archive:
    """The products found under an archive's roots."""

    s2: list[S2Product] = field(default_factory=list)
    s1: list[S1Product] = field(default_factory=list)
    dems: list[Dem] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    check_files: bool = False

    @classmethod
    def scan(
        cls,
        s2_root: Path | None = None,
        s1_root: Path | None = None,
        dem_root: Path | None = None,
        *,
        check_files: bool = False,
    ) -> Archive:
        """Scan the given roots; missing roots and unreadable entries are problems.

        Args:
            s2_root: Folder of S2 products (tile folders optional).
            s1_root: Folder of S1Tiling files.
            dem_root: Folder of DEMs.
            check_files: Also open every band and mask file of each product and read
                its last block: a truncated or missing file makes the product a problem.
        """
        archive = cls(check_files=check_files)
        for root in (s2_root, s1_root, dem_root):
            if root is not None and not Path(root).is_dir():
                archive.problems.append(ScanProblem(Path(root), "folder does not exist"))
        for sensor, root, scan in (("S2", s2_root, archive._scan_s2),
                                   ("S1", s1_root, archive._scan_s1),
                                   ("DEM", dem_root, archive._scan_dem)):
            if root is not None and Path(root).is_dir():
                known = len(archive.problems)
                scan(Path(root))
                # Which root a problem came from: stack tells a broken DEM from an S2 file.
                archive.problems[known:] = [replace(p, sensor=sensor)
                                            for p in archive.problems[known:]]
        archive.s2.sort(key=lambda p: (p.tile or "", p.acquired))
        archive.s1.sort(key=lambda p: (p.tile or "", p.acquired))
        return archive

    @classmethod
    def from_root(cls, root: Path, *, check_files: bool = False) -> Archive:
        """Scan ``root/S2``, ``root/S1`` and ``root/DEM`` (those that exist).

        ``check_files`` is that of :meth:`scan`.
        """
        root = Path(root)
        if not root.is_dir():
            raise NoProductError("archive folder does not exist", path=root)
        sub = {p.name.upper(): p for p in root.iterdir() if p.is_dir()}
        if not sub.keys() & {"S2", "S1", "DEM"}:
            raise NoProductError("expected S2/, S1/ or DEM/ sub-folders", path=root)
        return cls.scan(sub.get("S2"), sub.get("S1"), sub.get("DEM"), check_files=check_files)

    @classmethod
    def from_roots(
        cls,
        root: Path | None = None,
        s2_root: Path | None = None,
        s1_root: Path | None = None,
        dem_root: Path | None = None,
        *,
        check_files: bool = False,
    ) -> Archive:
        """Scan an archive root (:meth:`from_root`) and separate roots, as one archive.

        Each of ``s2_root``, ``s1_root`` and ``dem_root`` adds to what ``root`` holds
        (:meth:`merge`); give at least one of the four.

        Raises:
            NoProductError: No root at all, or ``root`` is not an archive folder.
        """
        if root is None and not (s2_root or s1_root or dem_root):
            raise NoProductError("no archive: give an archive root, or at least one of the "
                                 "S2, S1 and DEM roots", field="root")
        extra = cls.scan(s2_root, s1_root, dem_root, check_files=check_files)
        if root is None:
            return extra
        return cls.from_root(root, check_files=check_files).merge(extra)

    def merge(self, other: Archive) -> Archive:
        """Add another archive's products and problems to this one; return this one.

        A product found in both (the same file or folder, reached through two roots)
        is kept once. Products stay sorted by tile and date, as a scan sorts them.
        """
        seen = {p.path.resolve() for p in self.s2} | {d.path.resolve() for d in self.dems}
        seen |= {Path(f).resolve() for p in self.s1 for f in p.files}
        self.s2 += [p for p in other.s2 if p.path.resolve() not in seen]
        self.s1 += [p for p in other.s1 if not {Path(f).resolve() for f in p.files} & seen]
        self.dems += [d for d in other.dems if d.path.resolve() not in seen]
        known = {(p.path, p.reason) for p in self.problems}
        self.problems += [p for p in other.problems if (p.path, p.reason) not in known]
        self.s2.sort(key=lambda p: (p.tile or "", p.acquired))
        self.s1.sort(key=lambda p: (p.tile or "", p.acquired))
        return self

    def _entries(self, root: Path) -> Iterable[tuple[Path, str | None]]:
        """Entries under root and under its tile folders, with the folder's tile."""
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and _TILE.match(entry.name):
                for child in sorted(entry.iterdir()):
                    if not child.name.startswith("."):
                        yield child, normalize_tile(entry.name)
            else:
                yield entry, None

    def _checked(self, product: Product | Dem) -> None:
        if self.check_files:
            check_product_files(product)

    def _scan_s2(self, root: Path) -> None:
        claimed: set[Path] = set()  # band files of loose L1C products already opened
        for entry, folder_tile in self._entries(root):
            if entry.suffix.lower() in _SIDECARS or entry in claimed:
                continue
            try:
                product = open_product(entry)
                if isinstance(product, L1CBandFiles):
                    claimed.update(product.files)
                self._checked(product)
            except PRODUCT_FAULTS as err:
                self.problems.append(ScanProblem(entry, fault_reason(entry, err)))
                continue
            if not isinstance(product, S2Product):
                self.problems.append(ScanProblem(entry, f"a {product.sensor} product under the "
                                                        "S2 root"))
            elif folder_tile and product.tile and product.tile != folder_tile:
                self.problems.append(ScanProblem(
                    entry, f"product of tile {product.tile} in the folder of {folder_tile}"))
            else:
                if product.tile is None and folder_tile:
                    product.tile = folder_tile
                self.s2.append(product)

    def _scan_s1(self, root: Path) -> None:
        files: list[Path] = []
        for entry, _ in self._entries(root):
            if entry.suffix.lower() in _SIDECARS:
                continue
            try:
                parsed = parse_s1_name(entry)
            except DecloudError as err:
                self.problems.append(ScanProblem(entry, fault_reason(entry, err)))
                continue
            if entry.suffix.lower() in (".tif", ".tiff") and parsed:
                files.append(entry)
            else:
                self.problems.append(ScanProblem(entry, "not an S1Tiling file name (like "
                                                        "s1a_31TEJ_vv_DES_110_20170101t054437"
                                                        ".tif)"))
        for group in group_s1_files(files):
            try:
                image = S1Product.from_files(group)
                self._checked(image)
            except PRODUCT_FAULTS as err:
                # Name the file that failed, not its VV/VH twin.
                named = [p for p in group if isinstance(err, DecloudError)
                         and err.path == str(p)]
                where = named[0] if named else group[0]
                self.problems.append(ScanProblem(where, fault_reason(where, err)))
                continue
            self.s1.append(image)

    def _scan_dem(self, root: Path) -> None:
        for entry, folder_tile in self._entries(root):
            if entry.suffix.lower() not in (".tif", ".tiff", ".vrt"):
                if entry.suffix.lower() not in _SIDECARS:
                    self.problems.append(ScanProblem(entry, "not a DEM GeoTIFF"))
                continue
            try:
                dem = Dem.open(entry)
                self._checked(dem)
            except PRODUCT_FAULTS as err:
                self.problems.append(ScanProblem(entry, fault_reason(entry, err)))
                continue
            dem.tile = dem.tile or folder_tile or dem_tile(entry)
            self.dems.append(dem)

    # Queries ---------------------------------------------------------------------

    def tiles(self) -> list[str]:
        """Tiles with at least one S2 or S1 product, sorted."""
        return sorted({p.tile for p in [*self.s2, *self.s1] if p.tile})

    def select_s2(
        self, tile: str | None = None, start: date | None = None, end: date | None = None
    ) -> list[S2Product]:
        """S2 products of a tile (all tiles when None) acquired in [start, end]."""
        if start is not None and end is not None and end < start:
            raise NoProductError(f"empty date range: {start} is after {end}", field="dates")
        wanted = normalize_tile(tile) if tile else None
        return [
            p for p in self.s2
            if (wanted is None or p.tile == wanted)
            and (start is None or p.acquired.date() >= start)
            and (end is None or p.acquired.date() <= end)
        ]

    def find_s2(self, tile: str, day: date) -> S2Product:
        """The S2 product of a tile on a day."""
        found = self.select_s2(tile, day, day)
        if not found:
            if not self.select_s2(tile):
                # Not the date's fault: the tile has no product at all.
                tiles = ", ".join(sorted({p.tile for p in self.s2 if p.tile})) or "none"
                unreadable = [f"{p.path}: {p.reason}" for p in self.problems
                              if normalize_tile(tile)[1:] in str(p.path)]
                if unreadable:
                    raise NoProductError(f"tile {normalize_tile(tile)} has no readable S2 "
                                         f"product: {'; '.join(unreadable)}", field="tile")
                raise NoProductError(f"tile {normalize_tile(tile)} is not in the archive "
                                     f"(S2 tiles: {tiles})", field="tile")
            dates = ", ".join(sorted({p.acquired.date().isoformat()
                                      for p in self.select_s2(tile)})) or "none"
            unreadable = [f"{p.path}: {p.reason}" for p in self.problems
                          if normalize_tile(tile)[1:] in str(p.path)]
            hint = f"; unreadable entries of this tile: {'; '.join(unreadable)}" if unreadable \
                else ""
            raise NoProductError(f"no S2 product of {normalize_tile(tile)} on {day} "
                                 f"(dates available: {dates}){hint}", field="date")
        return found[0]

    def nearest_s1(self, tile: str, when: datetime, max_gap: timedelta) -> S1Product | None:
        """The S1 image of a tile closest in time to ``when``, within ``max_gap``."""
        wanted = normalize_tile(tile)
        candidates = [p for p in self.s1 if p.tile == wanted
                      and abs(p.acquired - when) <= max_gap]
        return min(candidates, key=lambda p: abs(p.acquired - when), default=None)

    def dem(self, tile: str) -> Dem | None:
        """The DEM of a tile, if any."""
        wanted = normalize_tile(tile)
        return next((d for d in self.dems if d.tile == wanted), None)

    def broken_s1(self, tile: str, when: datetime, max_gap: timedelta) -> list[ScanProblem]:
        """S1Tiling files of a tile within ``max_gap`` of ``when`` that the scan could not use.

        These are the S1 images :meth:`nearest_s1` would have weighed had they been
        readable (a truncated file, a broken header); closest first. Telling them from
        the absence of any S1 image is what lets ``stack`` say "cannot be read" rather
        than "none within 72 h".
        """
        wanted = normalize_tile(tile)
        found: list[tuple[timedelta, ScanProblem]] = []
        for problem in self.problems:
            if problem.sensor not in ("S1", ""):
                continue
            try:
                parsed = parse_s1_name(problem.path)
            except DecloudError:  # an impossible date in the name: not a candidate
                continue
            if parsed is None or parsed["tile"] != wanted:
                continue
            gap = abs(parsed["acquired"] - when)
            if gap <= max_gap:
                found.append((gap, problem))
        return [p for _, p in sorted(found, key=lambda item: (item[0], str(item[1].path)))]

    def broken_dems(self, tile: str) -> list[ScanProblem]:
        """DEM files of a tile (``<TILE>.tif``, or under a ``<TILE>/`` folder) the scan refused."""
        wanted = normalize_tile(tile)
        return [p for p in self.problems if p.sensor == "DEM"
                and p.path.suffix.lower() in (".tif", ".tiff", ".vrt")
                and (dem_tile(p.path) == wanted or _folder_tile(p.path) == wanted)]


def _folder_tile(path: Path) -> str | None:
    """The tile of the folder a file is in (``.../T31TEJ/x.tif``), if it is a tile folder."""
    match = _TILE.match(path.parent.name)
    return "T" + match[1].upper() if match else None


# Inventory --------------------------------------------------------------------------


def inventory_rows(archive: Archive, *, progress: bool = False) -> list[dict[str, Any]]:
    """One row per product: tile, date, platform, kind, cloud and nodata fractions.

    S2 cover (cloud, shadow, nodata) is computed at 20 m, the resolution of the product
    masks and of the index; S1 nodata at 60 m. A product whose rasters cannot be read
    gets the reason in ``problem`` and the listing goes on.

    Args:
        archive: The scanned archive.
        progress: Show progress bars (tqdm) while masks are read.

    Returns:
        Rows of S2 products, then S1 images, then DEMs, in the archive's order.
    """
    # tqdm only here: importing the archive stays light for workers.
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    # disable=None: no bar where stderr is not a terminal (logs, CI), whatever progress says.
    for product in tqdm(archive.s2, desc="S2 masks", disable=None if progress else True,
                        leave=False):
        row = _row(product)
        row["mask"] = product.mask_origin
        try:
            # 20 m: the resolution of the product masks (SCL, CLM_R2) and of the index.
            cover = product.cover(20.0)
            row.update(cloud=cover["cloud"], shadow=cover["shadow"], nodata=cover["nodata"])
        except PRODUCT_FAULTS as err:
            row["problem"] = fault_reason(product.path, err)
        rows.append(row)
    for image in tqdm(archive.s1, desc="S1", disable=None if progress else True, leave=False):
        row = _row(image)
        try:
            with RasterPool() as pool:
                data = image.read(list(image.bands), image.grid(60.0, pool), pool=pool)
            row["nodata"] = float(np.isnan(data).any(axis=0).mean())
        except PRODUCT_FAULTS as err:
            row["problem"] = fault_reason(image.files[0], err)
        rows.append(row)
    for dem in archive.dems:
        rows.append({"sensor": "DEM", "tile": dem.tile, "date": "", "platform": "", "kind": "dem",
                     "name": dem.path.name})
    return rows


def _row(product: S2Product | S1Product) -> dict[str, Any]:
    row: dict[str, Any] = {
        "sensor": product.sensor,
        "tile": product.tile,
        "date": product.acquired.strftime("%Y-%m-%d %H:%M"),
        "platform": product.platform,
        "kind": product.kind,
        "orbit": (f"{product.pass_direction or ''} {product.relative_orbit or ''}").strip(),
        "bands": ",".join(product.band_names),
        "name": product.name,
        "path": str(product.files[0] if isinstance(product, S1Product) else product.path),
    }
    # L1C products say so (kind safe-l1c / l1c-bands, level L1C) and carry their warnings.
    row["level"] = product.level if isinstance(product, S2Product) else ""
    warnings = getattr(product, "warnings", None)  # readers that have any (L1C)
    if warnings:
        row["warnings"] = list(warnings)
    return row
