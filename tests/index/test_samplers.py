"""Samplers: seeded, distinct, and drawing with the distribution each one promises.

The statistical tests draw with a fixed seed, so they are deterministic; their
tolerance is a chi-square test (p > 1e-3) of the drawn frequencies against the
frequencies the sampler's definition gives, computed here independently of the
sampler. Each test also checks that the frequencies of the *other* definition are
rejected (p < 1e-6): the test can tell a balanced sampler from an unbalanced one.

Tuples are drawn without duplicates (a duplicate is redrawn), which makes the draws
slightly less concentrated than independent draws; the stacks have so many tuples
per season (tens of thousands for a thousand draws) that this changes the expected
counts by less than a fifth of their standard deviation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy.stats import chisquare

from decloud.errors import ArgumentError
from decloud.grid import Grid
from decloud.index.samplers import SAMPLERS, ConstantSampler
from decloud.index.search import SampleTuple, TileStack, TupleSearch
from decloud.index.stats import PatchGrid
from decloud.layouts import Layout
from tests.index.conftest import LAYOUTS, PATCHES, T0, make_stack, record

#: Meteorological seasons by month, written out (the sampler computes them).
SEASON = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM",
          6: "JJA", 7: "JJA", 8: "JJA", 9: "SON", 10: "SON", 11: "SON"}
#: One acquisition, any cloud: one tuple per (S2 product, patch position).
SINGLE = {"name": "single", "acquisitions": {"t": {"reference": True,
                                                   "s2": {"cloud": [0, 100]}}}}
#: Passes: the test of the right frequencies; rejects: the test of the wrong ones.
PASSES, REJECTS = 1e-3, 1e-6


def key(t: SampleTuple) -> tuple[object, ...]:
    return (t.row, t.col, sorted(t.s2.items()), sorted(t.s1.items()))


def large_patches(rows: int, cols: int) -> PatchGrid:
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, 600000, 0, -10, 5000000),
                64 * cols, 64 * rows)
    return PatchGrid(grid, 64)


def monthly_stack(per_month: dict[int, int], rows: int = 100, cols: int = 100) -> TileStack:
    """Clear S2 products of 2020, ``per_month[m]`` of them in month ``m``."""
    dates = sorted(datetime(2020, month, day, 10, 30, tzinfo=UTC)
                   for month, count in per_month.items() for day in range(1, count + 1))
    s2 = [record(i, "S2", (when - T0).total_seconds() / 3600) for i, when in enumerate(dates)]
    patches = large_patches(rows, cols)
    zeros = np.zeros((len(s2), rows, cols), np.uint8)
    return TileStack("T31TEJ", patches, s2, zeros, zeros.copy(), [],
                     np.zeros((0, rows, cols), np.uint8))


def drawn_months(search: TupleSearch, tuples: list[SampleTuple]) -> Counter[int]:
    s2 = search.stack.s2
    return Counter(s2[int(t.s2["t"])].acquired.month for t in tuples)  # type: ignore[arg-type]


def by_season(months: Counter[int]) -> dict[str, int]:
    out = dict.fromkeys(("DJF", "MAM", "JJA", "SON"), 0)
    for month, count in months.items():
        out[SEASON[month]] += count
    return out


def chi2_p(observed: Mapping[Any, int], expected_share: Mapping[Any, float]) -> float:
    """p-value of observed counts against expected shares (over the same keys)."""
    keys = sorted(expected_share, key=str)
    if any(k not in expected_share for k in observed):
        return 0.0
    n = sum(observed.values())
    f_obs = np.array([observed.get(k, 0) for k in keys], np.float64)
    f_exp = np.array([expected_share[k] * n for k in keys], np.float64)
    return float(chisquare(f_obs, f_exp).pvalue)


# Summer-heavy, like a real archive of a cloudy region: 3, 6, 18 and 9 products.
PER_MONTH = {12: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 8, 7: 6, 8: 4, 9: 4, 10: 3, 11: 2}


@pytest.mark.parametrize("per_month", [
    PER_MONTH,
    {m: c for m, c in PER_MONTH.items() if SEASON[m] != "SON"},  # a season without data
])
def test_seasonal_sampler_balances_seasons(per_month: dict[int, int]) -> None:
    search = TupleSearch(monthly_stack(per_month), Layout.model_validate(SINGLE))
    n = 1200
    tuples = SAMPLERS["seasonal"](seed=5).sample(search, n)
    assert len(tuples) == n and len({str(key(t)) for t in tuples}) == n
    months = drawn_months(search, tuples)
    seasons = by_season(months)
    present = {SEASON[m] for m in per_month}
    # Definition: every season with data gets the same share, 1/k; none for the others.
    assert all(seasons[s] == 0 for s in seasons if s not in present)
    balanced = {s: 1 / len(present) for s in present}
    assert chi2_p({s: seasons[s] for s in present}, balanced) > PASSES, seasons
    total = sum(per_month.values())
    by_products = {s: sum(c for m, c in per_month.items() if SEASON[m] == s) / total
                   for s in present}
    assert chi2_p({s: seasons[s] for s in present}, by_products) < REJECTS, seasons
    # Within a season, as the random sampler: in proportion to the tuples, here to the
    # number of products of each month (every product has a tuple at every position).
    per_season = {s: sum(c for m, c in per_month.items() if SEASON[m] == s) for s in present}
    monthly = {m: balanced[SEASON[m]] * c / per_season[SEASON[m]]
               for m, c in per_month.items()}
    assert chi2_p(months, monthly) > PASSES, months


def test_random_sampler_follows_the_tuples_not_the_seasons() -> None:
    search = TupleSearch(monthly_stack(PER_MONTH), Layout.model_validate(SINGLE))
    n = 1200
    tuples = SAMPLERS["random"](seed=5).sample(search, n)
    assert len(tuples) == n
    seasons = by_season(drawn_months(search, tuples))
    total = sum(PER_MONTH.values())
    by_products = {s: sum(c for m, c in PER_MONTH.items() if SEASON[m] == s) / total
                   for s in seasons}
    assert chi2_p(seasons, by_products) > PASSES, seasons
    assert chi2_p(seasons, dict.fromkeys(seasons, 0.25)) < REJECTS, seasons


def s1_layout_stack(rng: np.random.Generator) -> tuple[TileStack, Layout]:
    """S2 products with 0 to 3 S1 candidates each, S1 nodata varying by patch."""
    rows, cols = 100, 100
    patches = large_patches(rows, cols)
    h2 = np.arange(8) * 240.0
    s2 = [record(i, "S2", h) for i, h in enumerate(h2)]
    # 0, 1, 2 or 3 S1 images within 48 h of each S2 product.
    h1 = np.sort(np.concatenate([h + np.array([-30.0, 20.0, 40.0])[: i % 4]
                                 for i, h in enumerate(h2)]))
    s1 = [record(100 + q, "S1", h, direction="ASC", orbit=8) for q, h in enumerate(h1)]
    zeros = np.zeros((len(s2), rows, cols), np.uint8)
    s1_nodata = rng.choice([0, 0, 0, 50], (len(s1), rows, cols)).astype(np.uint8)
    stack = TileStack("T31TEJ", patches, s2, zeros, zeros.copy(), s1, s1_nodata)
    layout = Layout.model_validate({"name": "s1", "acquisitions": {"t": {
        "reference": True, "s2": {"cloud": [0, 100]}, "s1": {"max_gap_hours": 48}}}})
    return stack, layout


def test_random_sampler_is_uniform_over_tuples() -> None:
    """Positions with more S1 candidates get more draws, each candidate as often."""
    stack, layout = s1_layout_stack(np.random.default_rng(11))
    # Brute force: every valid (S2, S1, row, col) is one tuple.
    pairs: Counter[int] = Counter()
    per_s1: Counter[int] = Counter()
    for p, rec2 in enumerate(stack.s2):
        for q, rec1 in enumerate(stack.s1):
            if abs(rec1.hours - rec2.hours) <= 48:
                valid = int((stack.s1_nodata[q] == 0).sum())
                pairs[p] += valid
                per_s1[q] += valid
    total = sum(pairs.values())
    assert total > 30 * 1200  # duplicates are rare
    search = TupleSearch(stack, layout)
    tuples = SAMPLERS["random"](seed=3).sample(search, 1200)
    drawn_s2 = Counter(int(t.s2["t"]) for t in tuples)  # type: ignore[arg-type]
    drawn_s1 = Counter(int(t.s1["t"]) for t in tuples)  # type: ignore[arg-type]
    assert set(drawn_s2) <= set(pairs) and set(drawn_s1) <= set(per_s1)
    share = {p: c / total for p, c in pairs.items()}
    assert chi2_p(drawn_s2, share) > PASSES, drawn_s2
    assert chi2_p(drawn_s1, {q: c / total for q, c in per_s1.items()}) > PASSES
    # Uniform over S2 products (ignoring their S1 candidates) would be rejected.
    assert chi2_p(drawn_s2, dict.fromkeys(pairs, 1 / len(pairs))) < REJECTS
    # Every drawn S1 image is a valid candidate at the drawn position.
    for t in tuples:
        q, p = int(t.s1["t"]), int(t.s2["t"])  # type: ignore[arg-type]
        assert abs(stack.s1_hours[q] - stack.s2_hours[p]) <= 48
        assert stack.s1_nodata[q, t.row, t.col] == 0


@pytest.mark.parametrize("per_position", [1, 3])
def test_constant_sampler_caps_every_position(per_position: int) -> None:
    stack = make_stack(np.random.default_rng(3), n2=16, n1=16)
    search = TupleSearch(stack, Layout.model_validate(LAYOUTS["os2"]))
    counts = search.counts()
    sampler = ConstantSampler(seed=0, per_position=per_position)
    # Enough asked: every position gets per_position tuples, or all it has.
    tuples = sampler.sample(search, 10_000)
    got = Counter((t.row, t.col) for t in tuples)
    expected = {(r, c): min(per_position, int(counts[r, c]))
                for r, c in zip(*np.nonzero(counts), strict=True)}
    assert got == expected
    assert len({str(key(t)) for t in tuples}) == len(tuples)
    # Fewer asked: exactly that many, still no position over per_position.
    few = sampler.sample(search, 4)
    assert len(few) == 4
    assert max(Counter((t.row, t.col) for t in few).values()) <= per_position


def test_constant_sampler_needs_a_positive_count() -> None:
    with pytest.raises(ArgumentError, match="per_position") as err:
        ConstantSampler(seed=0, per_position=0)
    assert err.value.field == "per_position"


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_samplers_are_seeded_and_distinct(sampler: str) -> None:
    stack = make_stack(np.random.default_rng(3), n2=16, n1=16)
    search = TupleSearch(stack, Layout.model_validate(LAYOUTS["os2"]))
    assert search.counts().sum() > 10
    first = SAMPLERS[sampler](seed=1).sample(search, 10)
    again = SAMPLERS[sampler](seed=1).sample(search, 10)
    other = SAMPLERS[sampler](seed=2).sample(search, 10)
    assert [key(t) for t in first] == [key(t) for t in again]
    assert [key(t) for t in first] != [key(t) for t in other]
    assert len({str(key(t)) for t in first}) == len(first)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_allowed_positions_are_respected(sampler: str) -> None:
    stack = make_stack(np.random.default_rng(3), n2=16, n1=16)
    search = TupleSearch(stack, Layout.model_validate(LAYOUTS["os2"]))
    allowed = np.zeros(PATCHES.shape, bool)
    allowed[search.counts() > 0] = True
    allowed[0, :] = False
    assert allowed.any()
    tuples = SAMPLERS[sampler](seed=0).sample(search, 20, allowed)
    assert tuples and all(t.row != 0 for t in tuples)
    assert SAMPLERS[sampler](seed=0).sample(search, 20, np.zeros(PATCHES.shape, bool)) == []
