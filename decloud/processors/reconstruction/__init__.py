"""Multi-date reconstruction of a target date from a fragmentary optical series.

The methods of Zhang et al. (IGARSS 2019) and its baselines, each a numpy kernel and a
block method of the streaming engine (:class:`.series.SeriesMethod`), usable with any
number of dates, none of them required to be clear:

* :mod:`.linear`: per-pixel linear interpolation in time (the gap-filling kernel);
* :mod:`.wlr`: weighted linear regression on similar pixels of a reference date
  (Zeng, Shen and Zhang 2013);
* :mod:`.patchgroup`: progressive spatio-temporal patch-group regression.

:class:`.series.SeriesDates` plugs them into the time-series processor
(``decloud process series --method linear|wlr|patchgroup``). The names below load on
first use (the kernels :func:`.wlr.wlr` and :func:`.patchgroup.patchgroup` are
imported from their modules, whose names they share).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

if TYPE_CHECKING:
    from decloud.processors.reconstruction.linear import LinearMethod, interpolate
    from decloud.processors.reconstruction.patchgroup import PatchGroupMethod, rank_group
    from decloud.processors.reconstruction.series import (
        METHODS,
        SeriesDates,
        SeriesMethod,
        build_method,
        method_class,
    )
    from decloud.processors.reconstruction.wlr import WLRMethod, local_scores

__all__ = [
    "METHODS",
    "LinearMethod",
    "PatchGroupMethod",
    "SeriesDates",
    "SeriesMethod",
    "WLRMethod",
    "build_method",
    "interpolate",
    "local_scores",
    "method_class",
    "rank_group",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    **dict.fromkeys(("LinearMethod", "interpolate"), "linear"),
    **dict.fromkeys(("PatchGroupMethod", "rank_group"), "patchgroup"),
    **dict.fromkeys(("METHODS", "SeriesDates", "SeriesMethod", "build_method",
                     "method_class"), "series"),
    **dict.fromkeys(("WLRMethod", "local_scores"), "wlr"),
}, __all__)
