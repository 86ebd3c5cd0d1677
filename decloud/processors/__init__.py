"""Processors: whole-tile reconstruction jobs built on the streaming engine.

* :mod:`.gapfill`: per-pixel, cloud-aware temporal interpolation (:func:`fill_gaps`,
  the engine method :class:`GapFillMethod`, the processor :func:`gapfill_tile`).
* :mod:`.single_date`: a single-date model on one S2 date and its nearest S1.
* :mod:`.neighbours` and :mod:`.multitemporal`: t-1 and t+1 chosen per block from the
  catalog's statistics, and the multi-temporal processor.
* :mod:`.timeseries` and :mod:`.monthly`: every date of a range, or one image per
  month, resumable by completion records, with a summary.
* :mod:`.reconstruction`: a target date rebuilt from a fragmentary optical series by
  linear interpolation, WLR (weighted linear regression on similar pixels) or the
  progressive spatio-temporal patch-group method (``process series --method``).

The names below load on first use, so that ``import decloud.processors`` costs no Keras:
the gap-filling kernel runs on numpy alone (only the processor runs the engine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from decloud._lazy import lazy_attributes

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
    from decloud.processors.monthly import (
        MonthlyGapFill,
        MonthlyModel,
        month_bounds,
        monthly_synthesis,
    )
    from decloud.processors.multitemporal import (
        MultiTemporalOptions,
        MultiTemporalPlan,
        multitemporal,
        plan_multitemporal,
    )
    from decloud.processors.neighbours import BlockChoice, choose_neighbours
    from decloud.processors.single_date import (
        SingleDateOptions,
        load_method,
        single_date,
        single_date_products,
    )
    from decloud.processors.timeseries import (
        DateReport,
        GapFillDates,
        ModelDates,
        MultiTemporalDates,
        SeriesOptions,
        run_series,
    )

__all__ = [
    "BlockChoice",
    "DateReport",
    "GapFill",
    "GapFillDates",
    "GapFillMethod",
    "GapFillOptions",
    "ModelDates",
    "MonthlyGapFill",
    "MonthlyModel",
    "MultiTemporalDates",
    "MultiTemporalOptions",
    "MultiTemporalPlan",
    "SeriesOptions",
    "SingleDateOptions",
    "TargetResult",
    "choose_neighbours",
    "fill_gaps",
    "gapfill_tile",
    "load_method",
    "month_bounds",
    "monthly_synthesis",
    "multitemporal",
    "plan_multitemporal",
    "run_series",
    "single_date",
    "single_date_products",
    "time_grid",
]

__getattr__, __dir__ = lazy_attributes(__name__, {
    **dict.fromkeys(("GapFill", "GapFillMethod", "GapFillOptions", "TargetResult",
                     "fill_gaps", "gapfill_tile", "time_grid"), "gapfill"),
    **dict.fromkeys(("MonthlyGapFill", "MonthlyModel", "month_bounds",
                     "monthly_synthesis"), "monthly"),
    **dict.fromkeys(("MultiTemporalOptions", "MultiTemporalPlan", "multitemporal",
                     "plan_multitemporal"), "multitemporal"),
    **dict.fromkeys(("BlockChoice", "choose_neighbours"), "neighbours"),
    **dict.fromkeys(("SingleDateOptions", "load_method", "single_date",
                     "single_date_products"), "single_date"),
    **dict.fromkeys(("DateReport", "GapFillDates", "ModelDates", "MultiTemporalDates",
                     "SeriesOptions", "run_series"), "timeseries"),
}, __all__)
