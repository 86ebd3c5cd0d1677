"""Uniform access to the files of a product, whether a folder or a zip archive."""

from __future__ import annotations

import zipfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath

from decloud.errors import ProductFormatError

__all__ = ["FolderFiles", "ProductFiles", "ZipFiles", "product_files"]


class ProductFiles(ABC):
    """The files of one product, addressed by paths relative to the product root."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @abstractmethod
    def names(self) -> list[str]:
        """Every file, as a POSIX path relative to the product root."""

    @abstractmethod
    def gdal_path(self, name: str) -> str:
        """A path GDAL can open for the file ``name``."""

    @abstractmethod
    def read_bytes(self, name: str) -> bytes:
        """The content of the file ``name``."""

    def find(self, suffix: str) -> list[str]:
        """Files whose name ends with ``suffix`` (case-insensitive), sorted."""
        low = suffix.lower()
        return sorted(n for n in self.names() if n.lower().endswith(low))


class FolderFiles(ProductFiles):
    """A product unpacked in a folder."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            )
        return self._names

    def gdal_path(self, name: str) -> str:
        return str(self.path / name)

    def read_bytes(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as err:
            raise ProductFormatError(f"cannot be read ({err.strerror or err})",
                                     path=self.path / name) from err


class ZipFiles(ProductFiles):
    """A zipped product, whose content sits in one top-level folder (THEIA, SAFE)."""

    def __init__(self, path: Path, inner: str) -> None:
        super().__init__(path)
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/")]
        except (zipfile.BadZipFile, OSError) as err:
            raise ProductFormatError(f"not a readable zip archive ({err})", path=path) from err
        prefix = inner.rstrip("/") + "/"
        self._prefix = prefix
        self._names = sorted(m[len(prefix) :] for m in members if m.startswith(prefix))
        if not self._names:
            tops = sorted({PurePosixPath(m).parts[0] for m in members})
            raise ProductFormatError(
                f"the zip should hold a folder {inner!r}; it holds {tops[:3]}", path=path
            )

    def names(self) -> list[str]:
        return self._names

    def gdal_path(self, name: str) -> str:
        return f"/vsizip/{self.path}/{self._prefix}{name}"

    def read_bytes(self, name: str) -> bytes:
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self._prefix + name)
        except (zipfile.BadZipFile, KeyError, OSError, EOFError) as err:
            # A damaged member (bad CRC, cut short) or one removed since the listing.
            raise ProductFormatError(f"cannot read {self._prefix + name} from the zip ({err})",
                                     path=self.path, field=name) from err


def product_files(path: Path, inner: str) -> ProductFiles:
    """Return the files of a product folder, or of a zip holding the folder ``inner``."""
    if path.is_dir():
        return FolderFiles(path)
    if path.suffix.lower() == ".zip":
        return ZipFiles(path, inner)
    raise ProductFormatError("expected a product folder or a .zip archive", path=path)
