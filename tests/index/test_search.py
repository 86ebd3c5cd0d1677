"""Tuple search against a brute-force enumeration; the stack's and layout's checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decloud.errors import CatalogError, LayoutError
from decloud.index.search import TileStack, TupleSearch
from decloud.layouts import Layout
from tests.index.conftest import LAYOUTS, PATCHES, make_stack, record


def brute_force(stack: TileStack, layout: Layout, row: int, col: int) -> int:
    """Enumerate every assignment of products to acquisitions and count the valid ones."""
    names = list(layout.acquisitions)
    ref = layout.reference_name
    choices = []
    for name in names:
        acq = layout.acquisitions[name]
        s2 = range(len(stack.s2)) if acq.s2 else [None]
        s1 = range(len(stack.s1)) if acq.s1 else [None]
        choices.append(list(itertools.product(s2, s1)))
    total = 0
    for combo in itertools.product(*choices):
        pick = dict(zip(names, combo, strict=True))
        t_ref = stack.s2_hours[pick[ref][0]]  # type: ignore[index]
        if all(ok(stack, layout, n, pick[n], t_ref, row, col) for n in names) and all(
                len({pick[m][0] for m in group}) == 1 for group in layout.siblings):
            total += 1
    return total


def ok(stack: TileStack, layout: Layout, name: str, pick: tuple[int | None, int | None],
       t_ref: float, row: int, col: int) -> bool:
    acq = layout.acquisitions[name]
    p, q = pick
    start, end = (0.0, 0.0) if acq.reference else acq.window_hours  # type: ignore[misc]
    if acq.s2 is not None:
        assert p is not None
        lo, hi = acq.s2.cloud
        if not (lo <= stack.s2_cloud[p, row, col] <= hi  # type: ignore[operator]
                and stack.s2_nodata[p, row, col] <= acq.s2.nodata_max
                and start <= stack.s2_hours[p] - t_ref <= end):
            return False
    if acq.s1 is not None:
        assert q is not None
        s1 = stack.s1[q]
        if stack.s1_nodata[q, row, col] > acq.s1.nodata_max:
            return False
        if acq.s1.pass_direction and s1.pass_direction != acq.s1.pass_direction:
            return False
        if acq.s1.relative_orbits and s1.relative_orbit not in acq.s1.relative_orbits:
            return False
        if acq.s2 is not None:
            return abs(stack.s1_hours[q] - stack.s2_hours[p]) <= acq.s1.max_gap_hours
        return start <= stack.s1_hours[q] - t_ref <= end
    return True


# The four-acquisition layout enumerates ~8000 assignments per patch: about 4.5 s.
@pytest.mark.parametrize("name", ["os2", pytest.param("constraints", marks=pytest.mark.slow)])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_counts_equal_brute_force(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    stack = make_stack(rng, n2=5, n1=4)
    layout = Layout.model_validate(LAYOUTS[name])
    search = TupleSearch(stack, layout)
    counts = search.counts()
    expected = np.array([[brute_force(stack, layout, r, c) for c in range(3)] for r in range(2)])
    np.testing.assert_array_equal(counts, expected)
    # Every drawn tuple satisfies the layout.
    refs, rows, cols = np.nonzero(search.tuple_counts_by_reference())
    for p, r, c in list(zip(refs, rows, cols, strict=True))[:5]:
        tup = search.draw(rng, int(p), int(r), int(c))
        t_ref = stack.s2_hours[tup.s2[layout.reference_name]]  # type: ignore[index]
        for acq in layout.acquisitions:
            assert ok(stack, layout, acq, (tup.s2[acq], tup.s1[acq]), t_ref, r, c)


def test_unresolved_layout_is_refused() -> None:
    layout = Layout.model_validate({"name": "m", "acquisitions": {
        "t": {"reference": True, "s2": {"cloud": [{"randint": [0, 2]}, 100]}}}})
    with pytest.raises(LayoutError, match="resolve"):
        TupleSearch(make_stack(np.random.default_rng(0), 3, 2), layout)


def test_unsorted_products_are_refused() -> None:
    stack = make_stack(np.random.default_rng(0), 3, 2)
    with pytest.raises(CatalogError, match="S2 products of tile T31TEJ are not sorted") as err:
        TileStack(stack.tile, PATCHES, stack.s2[::-1], stack.s2_cloud, stack.s2_nodata,
                  stack.s1, stack.s1_nodata)
    assert err.value.field == "s2"
    with pytest.raises(CatalogError, match="S1 products of tile T31TEJ are not sorted"):
        TileStack(stack.tile, PATCHES, stack.s2, stack.s2_cloud, stack.s2_nodata,
                  stack.s1[::-1], stack.s1_nodata)
    # Equal times are sorted (two S2 tiles of one pass).
    twins = [record(0, "S2", 12.0), record(1, "S2", 12.0)]
    TileStack(stack.tile, PATCHES, twins, stack.s2_cloud[:2], stack.s2_nodata[:2],
              stack.s1, stack.s1_nodata)


@pytest.mark.parametrize("name", ["s2_cloud", "s2_nodata", "s1_nodata"])
def test_statistics_of_the_wrong_shape_are_refused(name: str) -> None:
    stack = make_stack(np.random.default_rng(0), 3, 2)
    arrays = {"s2_cloud": stack.s2_cloud, "s2_nodata": stack.s2_nodata,
              "s1_nodata": stack.s1_nodata}
    arrays[name] = arrays[name][:, :, :-1]  # one patch column short
    with pytest.raises(CatalogError, match=rf"{name} has shape .* expected") as err:
        TileStack(stack.tile, PATCHES, stack.s2, arrays["s2_cloud"], arrays["s2_nodata"],
                  stack.s1, arrays["s1_nodata"])
    assert err.value.field == name


def test_unvalidated_layouts_get_typed_errors() -> None:
    """Layouts changed without validation (``model_copy``) fail with a LayoutError."""
    stack = make_stack(np.random.default_rng(0), 3, 2)
    valid = Layout.model_validate(LAYOUTS["os2"])
    acquisitions = dict(valid.acquisitions)
    acquisitions["target"] = acquisitions["target"].model_copy(update={"window_hours": None})
    no_window = valid.model_copy(update={"acquisitions": acquisitions})
    with pytest.raises(LayoutError, match="window_hours") as err:
        TupleSearch(stack, no_window)
    assert err.value.field == "acquisitions.target.window_hours"
    siblings = Layout.model_validate(LAYOUTS["constraints"])
    # "a" has S1 (an S1-only sibling), "b" has nothing left.
    for name, words in (("a", "sibling acquisition needs s2"), ("b", "needs s2, s1 or both")):
        acquisitions = dict(siblings.acquisitions)
        acquisitions[name] = acquisitions[name].model_copy(update={"s2": None})
        no_s2 = siblings.model_copy(update={"acquisitions": acquisitions})
        with pytest.raises(LayoutError, match=words) as err:
            TupleSearch(stack, no_s2)
        assert err.value.field == f"acquisitions.{name}.s2"
