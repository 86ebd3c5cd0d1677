"""Package attributes imported on first use (PEP 562), shared by every lazy ``__init__``.

A package lists where each public name lives; ``import decloud.<package>`` then costs
nothing, and only the submodule of a name that is used gets imported (so a Dask worker
reading datasets never loads matplotlib, and ``import decloud.grid`` never loads Keras).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, where: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a lazy package.

    Args:
        package: The package's ``__name__``.
        where: Each name and the submodule it lives in, relative to the package
            (``{"run": "engine"}`` for ``decloud.inference.engine.run``).
        public: The package's ``__all__``.

    Returns:
        ``(__getattr__, __dir__)``, to assign at the package's top level. A name is
        looked up once: it is then stored in the package's namespace.
    """
    names = sorted(public)

    def getattr_(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        # A submodule named like one of its functions (datasets.preview) would otherwise
        # shadow the function once imported: the package attribute is the function.
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return getattr_, dir_
