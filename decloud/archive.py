"""Discovery of an archive of S2 products, S1 images and DEMs.

Expected layout (every root optional; tile sub-folders optional too)::

    S2_ROOT/<TILE>/<product>      THEIA or SAFE folders or zips, stacks with sidecars
    S1_ROOT/<TILE>/*.tif          S1Tiling outputs
    DEM_ROOT/<TILE>.tif           one DEM per tile, any CRS

Every entry is tried; one that cannot be read is reported in
:attr:`Archive.problems` with the reason, and the scan goes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from decloud.errors import DecloudError, NoProductError
from decloud.products import Dem, S1Product, S2Product, open_product
from decloud.products.dem import dem_tile
from decloud.products.s1tiling import group_s1_files, parse_s1_name

__all__ = ["Archive", "ScanProblem", "normalize_tile"]

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


@dataclass
class Archive:
    """The products found under an archive's roots."""

    s2: list[S2Product] = field(default_factory=list)
    s1: list[S1Product] = field(default_factory=list)
    dems: list[Dem] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)

    @classmethod
    def scan(
        cls,
        s2_root: Path | None = None,
        s1_root: Path | None = None,
        dem_root: Path | None = None,
    ) -> Archive:
        """Scan the given roots; missing roots are reported as problems."""
        archive = cls()
        for root in (s2_root, s1_root, dem_root):
            if root is not None and not Path(root).is_dir():
                archive.problems.append(ScanProblem(Path(root), "folder does not exist"))
        if s2_root is not None and Path(s2_root).is_dir():
            archive._scan_s2(Path(s2_root))
        if s1_root is not None and Path(s1_root).is_dir():
            archive._scan_s1(Path(s1_root))
        if dem_root is not None and Path(dem_root).is_dir():
            archive._scan_dem(Path(dem_root))
        archive.s2.sort(key=lambda p: (p.tile or "", p.acquired))
        archive.s1.sort(key=lambda p: (p.tile or "", p.acquired))
        return archive

    @classmethod
    def from_root(cls, root: Path) -> Archive:
        """Scan ``root/S2``, ``root/S1`` and ``root/DEM`` (those that exist)."""
        root = Path(root)
        if not root.is_dir():
            raise NoProductError("archive folder does not exist", path=root)
        sub = {p.name.upper(): p for p in root.iterdir() if p.is_dir()}
        if not sub.keys() & {"S2", "S1", "DEM"}:
            raise NoProductError("expected S2/, S1/ or DEM/ sub-folders", path=root)
        return cls.scan(sub.get("S2"), sub.get("S1"), sub.get("DEM"))

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

    def _scan_s2(self, root: Path) -> None:
        for entry, folder_tile in self._entries(root):
            if entry.suffix.lower() in _SIDECARS:
                continue
            try:
                product = open_product(entry)
            except DecloudError as err:
                self.problems.append(ScanProblem(entry, err.message))
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
            if entry.suffix.lower() in (".tif", ".tiff") and parse_s1_name(entry):
                files.append(entry)
            else:
                self.problems.append(ScanProblem(entry, "not an S1Tiling file name (like "
                                                        "s1a_31TEJ_vv_DES_110_20170101t054437"
                                                        ".tif)"))
        for group in group_s1_files(files):
            try:
                self.s1.append(S1Product.from_files(group))
            except DecloudError as err:
                self.problems.append(ScanProblem(group[0], err.message))

    def _scan_dem(self, root: Path) -> None:
        for entry, folder_tile in self._entries(root):
            if entry.suffix.lower() not in (".tif", ".tiff", ".vrt"):
                if entry.suffix.lower() not in _SIDECARS:
                    self.problems.append(ScanProblem(entry, "not a DEM GeoTIFF"))
                continue
            try:
                dem = Dem.open(entry)
            except DecloudError as err:
                self.problems.append(ScanProblem(entry, err.message))
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
