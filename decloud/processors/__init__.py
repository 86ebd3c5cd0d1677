"""Processors: whole-tile reconstruction jobs built on the streaming engine.

* :mod:`.gapfill`: per-pixel, cloud-aware temporal interpolation (:func:`fill_gaps`,
  the engine method :class:`GapFillMethod`, the processor :func:`gapfill_tile`).

The names below load on first use, so that ``import decloud.processors`` costs no Keras:
the gap-filling kernel runs on numpy alone (only the processor runs the engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decloud.processors.gapfill import (
        GapFill,
        GapFillMethod,
        GapFillOptions,
        TargetResult,
        fill_gaps,
        gapfill_tile,
        time_grid,
    )

__all__ = [
    "GapFill",
    "GapFillMethod",
    "GapFillOptions",
    "TargetResult",
    "fill_gaps",
    "gapfill_tile",
    "time_grid",
]

#: Where each lazily loaded name lives.
_WHERE = {
    **dict.fromkeys(("GapFill", "GapFillMethod", "GapFillOptions", "TargetResult",
                     "fill_gaps", "gapfill_tile", "time_grid"), "decloud.processors.gapfill"),
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
