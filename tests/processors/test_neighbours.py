"""Per-block neighbour choice against a brute-force selection on real catalogs."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.windows import Window

from decloud.errors import ArgumentError, GridError, LayoutError, NoProductError
from decloud.grid import Grid
from decloud.index.catalog import Catalog
from decloud.layouts import Layout, load_layout
from decloud.processors.neighbours import (
    SAME_DATE_HOURS,
    Fallback,
    choose_neighbours,
)

TILE = "T31TCJ"
T0 = datetime(2020, 6, 1, 10, 30, tzinfo=UTC)
P = 8  # patch size (px): small so that blocks span several patches
# 45 x 37 px: the last patch row and column are partial (5 and 5 px).
GRID = Grid(CRS.from_epsg(32631), Affine(10, 0, 300000, 0, -10, 4900000), 45, 37)
ROWS, COLS = math.ceil(37 / P), math.ceil(45 / P)

LAYOUT = Layout.model_validate({"name": "test", "acquisitions": {
    "tm1": {"window_hours": [-720, -240], "s2": {"cloud": [0, 40], "nodata_max": 20},
            "s1": {"max_gap_hours": 72}},
    "t": {"reference": True, "s2": {"cloud": [1, 100]}, "s1": {"max_gap_hours": 72}},
    "tp1": {"window_hours": [240, 720], "s2": {"cloud": [0, 100], "nodata_max": 100},
            "s1": {"max_gap_hours": 72, "nodata_max": 10}},
}})


# S1 pass and orbit constraints, a window spanning the target, the cloud minimum unused.
CONSTRAINED = Layout.model_validate({"name": "constrained", "acquisitions": {
    "t": {"reference": True, "s2": {"cloud": [0, 100]},
          "s1": {"max_gap_hours": 60, "pass_direction": "DES", "nodata_max": 5}},
    "near": {"window_hours": [-300, 300], "s2": {"cloud": [10, 20], "nodata_max": 2}},
    "after": {"window_hours": [100, 900], "s2": {"cloud": [0, 60]},
              "s1": {"max_gap_hours": 100, "relative_orbits": [8, 9]}},
}})
LAYOUTS = {"test": (LAYOUT, ("tm1", "tp1")), "constrained": (CONSTRAINED, ("near", "after"))}


def _blocks(size: int, margin: int = 0) -> list[Window]:
    """The engine's blocks: cores, or padded windows reaching past the tile."""
    return [padded if margin else core for core, padded in GRID.windows(size, margin)]


class Fixture:
    """A catalog in a folder, filled through the catalog's own API."""

    def __init__(self, folder: Path) -> None:
        self.catalog = Catalog.create(folder, patch_size=P)
        self.catalog.register_tile(TILE, GRID)
        self.folder = folder
        self.stats: dict[int, dict[str, np.ndarray]] = {}
        self.hours: dict[int, float] = {}
        self.s1_meta: dict[int, tuple[str, int]] = {}

    def add(self, sensor: str, hours: float, nodata: np.ndarray,
            cloud: np.ndarray | None = None, shadow: np.ndarray | None = None,
            direction: str | None = None, orbit: int | None = None) -> int:
        arrays = {"nodata": np.asarray(nodata, np.uint8)}
        if cloud is not None:
            arrays["cloud"] = np.asarray(cloud, np.uint8)
            arrays["shadow"] = np.asarray(shadow if shadow is not None
                                          else np.zeros_like(cloud), np.uint8)
        path = self.folder / f"{sensor}_{len(self.stats)}"
        pid = self.catalog.insert_record(
            sensor=sensor, kind="test", path=str(path), files=[str(path)], tile=TILE,
            acquired=T0 + timedelta(hours=hours), platform=sensor + "A",
            pass_direction=direction, relative_orbit=orbit, mask_origin=None,
            arrays=arrays, grid=GRID)
        self.stats[pid] = arrays
        self.hours[pid] = hours
        if sensor == "S1":
            self.s1_meta[pid] = (direction or "", orbit or 0)
        return pid


def _full(value: int) -> np.ndarray:
    return np.full((ROWS, COLS), value, np.uint8)


def _edge_nodata() -> np.ndarray:
    """Nodata percentages the catalog stores for a product valid over the whole tile."""
    out = np.zeros((ROWS, COLS), np.uint8)
    for r in range(ROWS):
        for c in range(COLS):
            inside = min(P, GRID.height - r * P) * min(P, GRID.width - c * P)
            out[r, c] = round(100 * (P * P - inside) / (P * P))
    return out


# Brute force -------------------------------------------------------------------------

def _round(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def _pixel_units(stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (nodata', unusable') of a product, in 0.01 %, from its patches."""
    nd = np.zeros((GRID.height, GRID.width), np.int64)
    un = np.zeros_like(nd)
    for r in range(ROWS):
        for c in range(COLS):
            h, w = min(P, GRID.height - r * P), min(P, GRID.width - c * P)
            area, full = h * w, P * P
            n = int(stats["nodata"][r, c])
            edge = round(100.0 * (full - area) / full)  # what the catalog stores for it
            nodata = min(10000, _round(Fraction(100 * max(0, n - edge) * full, area)))
            cloud = 0
            if "cloud" in stats:
                cs = min(100, int(stats["cloud"][r, c]) + int(stats["shadow"][r, c]))
                cloud = min(10000, _round(Fraction((100 - n) * cs * full, area)))
            nd[r * P:r * P + h, c * P:c * P + w] = nodata
            un[r * P:r * P + h, c * P:c * P + w] = min(10000, nodata + cloud)
    return nd, un


def _block_sum(pixels: np.ndarray, block: Window) -> tuple[int, int]:
    r0, c0 = max(int(block.row_off), 0), max(int(block.col_off), 0)
    r1 = min(int(block.row_off + block.height), GRID.height)
    c1 = min(int(block.col_off + block.width), GRID.width)
    part = pixels[r0:r1, c0:c1]
    return int(part.sum()), part.size


def brute_force(fx: Fixture, layout: Layout, blocks: Sequence[Window], names: Sequence[str],
                *, widen: float = 0.0, tol: float = 1.0,
                max_unusable: float | None = None) -> list[dict[str, tuple[Any, ...]]]:
    """Plain loops over blocks, acquisitions, products: (s2 id, s1 id, fallback)."""
    s2 = sorted((pid for pid in fx.stats if pid not in fx.s1_meta),
                key=lambda p: (fx.hours[p], p))
    s1 = sorted(fx.s1_meta, key=lambda p: (fx.hours[p], p))
    units = {pid: _pixel_units(fx.stats[pid]) for pid in fx.stats}
    tol_u = round(tol * 100)
    out = []
    for block in blocks:
        choice: dict[str, tuple[Any, ...]] = {}

        def pick_s1(spec: Any, when: float, block: Window = block) -> int | None:
            rows = []
            for q in s1:
                direction, orbit = fx.s1_meta[q]
                if abs(fx.hours[q] - when) > spec.max_gap_hours:
                    continue
                if spec.pass_direction and direction != spec.pass_direction:
                    continue
                if spec.relative_orbits and orbit not in spec.relative_orbits:
                    continue
                rows.append((*_block_sum(units[q][0], block), abs(fx.hours[q] - when), q))
            if not rows:
                return None
            area = rows[0][1]
            least = min(r[0] for r in rows)
            best = min((r[2], r[0], fx.hours[r[3]], r[3]) for r in rows
                       if r[0] <= least + tol_u * area)
            return int(best[3])

        ref = layout.acquisitions[layout.reference_name]
        if ref.s1 is not None:
            q = pick_s1(ref.s1, 0.0)
            choice[layout.reference_name] = (None, q, "missing" if q is None else "none")
        for name in names:
            acq = layout.acquisitions[name]
            assert acq.s2 is not None and acq.window_hours is not None
            start, end = acq.window_hours
            high = acq.s2.cloud[1]
            assert isinstance(high, float)
            limit = round((high if max_unusable is None else max_unusable) * 100)
            nd_limit = round(acq.s2.nodata_max * 100)
            cands = []
            for p in s2:
                dt = fx.hours[p]
                if abs(dt) < SAME_DATE_HOURS or (end <= 0 < dt) or (start >= 0 > dt):
                    continue
                if acq.s1 is not None and pick_s1(acq.s1, dt) is None:
                    continue
                un, area = _block_sum(units[p][1], block)
                nd, _ = _block_sum(units[p][0], block)
                within = un <= limit * area and nd <= nd_limit * area
                in_window = start <= dt <= end
                widened = start - widen <= dt <= end + widen
                cands.append((p, dt, un, area, within, in_window, widened))
            tiers = [("none", [c for c in cands if c[5] and c[4]])]
            if widen > 0:
                tiers.append(("widened", [c for c in cands if c[6] and c[4]]))
            tiers.append(("over_limit", [c for c in cands if c[6]]))
            result: tuple[Any, ...] = (None, None, "missing")
            for label, tier in tiers:
                if tier:
                    least = min(c[2] for c in tier)
                    near = [c for c in tier if c[2] <= least + tol_u * c[3]]
                    best = min(near, key=lambda c: (abs(c[1]), c[2], c[1], c[0]))
                    s1_id = pick_s1(acq.s1, best[1]) if acq.s1 is not None else None
                    result = (best[0], s1_id, label)
                    break
            choice[name] = result
        out.append(choice)
    return out


def _summary(choices: list[Any], reference: str = "t") -> list[dict[str, tuple[Any, ...]]]:
    return [{name: (c.s2.id if c.s2 is not None and name != reference else None,
                    c.s1.id if c.s1 is not None else None, c.fallback.value)
             for name, c in choice.choices.items()} for choice in choices]


# Property test -----------------------------------------------------------------------

_PERCENT = st.sampled_from([0, 0, 0, 1, 2, 5, 20, 39, 40, 41, 60, 100])


@st.composite
def _scenes(draw: st.DrawFn) -> dict[str, Any]:
    n2 = draw(st.integers(0, 7))
    n1 = draw(st.integers(0, 5))
    hours = st.sampled_from([-900, -720, -600, -480, -300, -241, -240, -100, 0, 5, 100,
                             240, 300, 480, 480, 720, 800, 1000])
    s2 = [(draw(hours), *(draw(st.lists(st.lists(_PERCENT, min_size=COLS, max_size=COLS),
                                         min_size=ROWS, max_size=ROWS)) for _ in range(3)))
          for _ in range(n2)]
    s1 = [(draw(hours) + draw(st.sampled_from([-50, 0, 30, 100])),
           draw(st.lists(st.lists(_PERCENT, min_size=COLS, max_size=COLS), min_size=ROWS,
                         max_size=ROWS))) for _ in range(n1)]
    s1_meta = [(draw(st.sampled_from(["ASC", "DES"])), draw(st.sampled_from([8, 9, 10])))
               for _ in range(n1)]
    return {"s2": s2, "s1": s1, "s1_meta": s1_meta,
            "layout": draw(st.sampled_from(sorted(LAYOUTS))),
            "size": draw(st.sampled_from([5, 8, 12, 16, 45])),
            "margin": draw(st.sampled_from([0, 0, 3])),
            "max_unusable": draw(st.sampled_from([None, None, 0.0, 15.0])),
            "widen": draw(st.sampled_from([0.0, 200.0, 400.0])),
            "tol": draw(st.sampled_from([0.0, 1.0, 10.0]))}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenes())
def test_choices_equal_brute_force(scene: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixture(Path(tmp))
        for hours, cloud, shadow, nodata in scene["s2"]:
            # Cloud and shadow are shares of the valid pixels: keep their sum <= 100.
            c = np.array(cloud, np.uint8)
            s = np.minimum(np.array(shadow, np.uint8), 100 - c)
            fx.add("S2", hours, np.array(nodata, np.uint8), c, s)
        for (hours, nodata), (direction, orbit) in zip(scene["s1"], scene["s1_meta"],
                                                       strict=True):
            fx.add("S1", hours, np.array(nodata, np.uint8), direction=direction, orbit=orbit)
        layout, names = LAYOUTS[scene["layout"]]
        blocks = _blocks(scene["size"], scene["margin"])
        got = choose_neighbours(fx.catalog, TILE, T0, layout, blocks, acquisitions=names,
                                widen_hours=scene["widen"], tolerance=scene["tol"],
                                max_unusable=scene["max_unusable"])
        want = brute_force(fx, layout, blocks, names, widen=scene["widen"], tol=scene["tol"],
                           max_unusable=scene["max_unusable"])
        assert _summary(got) == want
        fx.catalog.close()


# Cases -------------------------------------------------------------------------------

@pytest.fixture
def fx(tmp_path: Path) -> Iterator[Fixture]:
    fixture = Fixture(tmp_path / "catalog")
    yield fixture
    fixture.catalog.close()


def _clear_s2(fx: Fixture, hours: float, cloud: int = 0) -> int:
    return fx.add("S2", hours, _edge_nodata(), _full(cloud), _full(0))


def test_clear_date_beats_nearer_cloudy_and_nodata_dates(fx: Fixture) -> None:
    cloudy = fx.add("S2", -250, _full(0), _full(30), _full(0))
    no_data = fx.add("S2", -260, _full(30), _full(0), _full(0))
    clear = _clear_s2(fx, -700)
    for h in (-250, -260, -700, 0):
        fx.add("S1", h + 1, _edge_nodata())
    [choice] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, [Window(0, 0, 16, 16)])
    tm1 = choice.choices["tm1"]
    assert tm1.s2 is not None and tm1.s2.id == clear not in (cloudy, no_data)
    assert tm1.fallback is Fallback.NONE and tm1.unusable == 0.0
    # Within the tolerance the nearer date wins: 30 % cloud is "as clear" at 30 points.
    [loose] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, [Window(0, 0, 16, 16)],
                                tolerance=30)
    assert loose.choices["tm1"].s2.id == cloudy  # type: ignore[union-attr]
    assert loose.choices["tm1"].cloud == pytest.approx(0.3)


def test_choice_is_per_block(fx: Fixture) -> None:
    # Clouds over the left half on the near date, the right half on the far one.
    left = _full(0)
    left[:, :3] = 100
    right = _full(0)
    right[:, 3:] = 100
    near = fx.add("S2", 300, _edge_nodata(), left, _full(0))
    far = fx.add("S2", 600, _edge_nodata(), right, _full(0))
    for h in (300, 600):
        fx.add("S1", h, _edge_nodata())
    choices = choose_neighbours(fx.catalog, TILE, T0, LAYOUT,
                                [Window(0, 0, 24, 37), Window(24, 0, 21, 37)],
                                acquisitions=["tp1"])
    assert [c.choices["tp1"].s2.id for c in choices] == [far, near]  # type: ignore[union-attr]
    assert [c.choices["tp1"].cloud for c in choices] == [0.0, 0.0]
    # The layout gives t an S1, but none lies within 72 h of the target.
    assert all(c.choices["t"].fallback is Fallback.MISSING for c in choices)


def test_widened_window_then_over_limit_then_missing(fx: Fixture) -> None:
    beyond = fx.add("S2", -800, _edge_nodata(), _full(10), _full(0))  # outside [-720, -240]
    cloudy = fx.add("S2", -500, _edge_nodata(), _full(90), _full(0))  # over the 40 % limit
    for h in (-800, -500):
        fx.add("S1", h, _edge_nodata())
    block = [Window(0, 0, 45, 37)]
    [plain] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, block)
    assert plain.choices["tm1"].s2.id == cloudy  # type: ignore[union-attr]
    assert plain.choices["tm1"].fallback is Fallback.OVER_LIMIT and plain.fallback
    [wide] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, block, widen_hours=100)
    assert wide.choices["tm1"].s2.id == beyond  # type: ignore[union-attr]
    assert wide.choices["tm1"].fallback is Fallback.WIDENED
    # A stricter limit than the layout's turns the widened date into an over-limit one.
    [strict] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, block, widen_hours=100,
                                 max_unusable=5)
    assert strict.choices["tm1"].fallback is Fallback.OVER_LIMIT
    assert strict.choices["tm1"].s2.id == beyond  # type: ignore[union-attr]  # least cloudy
    # Nothing after t: tp1 is missing, never a date from the other side.
    assert plain.choices["tp1"].s2 is None
    assert plain.choices["tp1"].fallback is Fallback.MISSING
    # However wide the window, it stays on its side of the target.
    [widest] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, block, widen_hours=5000)
    assert widest.choices["tp1"].fallback is Fallback.MISSING


def test_s2_without_s1_partner_is_not_a_candidate(fx: Fixture) -> None:
    clear = _clear_s2(fx, -300)
    partnered = _clear_s2(fx, -600, cloud=20)
    s1 = fx.add("S1", -650, _edge_nodata())  # 50 h from -600, 350 h from -300
    [choice] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, [Window(0, 0, 8, 8)])
    assert choice.choices["tm1"].s2.id == partnered != clear  # type: ignore[union-attr]
    assert choice.choices["tm1"].s1.id == s1  # type: ignore[union-attr]


def test_block_at_the_tile_edge(fx: Fixture) -> None:
    # The catalog counts pixels past the tile's edge as nodata in partial patches; a
    # product valid everywhere is fully usable on an edge block.
    valid = _clear_s2(fx, 700)
    # The nearer date has real nodata in the same partial patch.
    holes = _edge_nodata()
    holes[-1, -1] = 100
    nearer = fx.add("S2", 300, holes, _full(0), _full(0))
    for h in (300, 700):
        fx.add("S1", h, _edge_nodata())
    edge = Window(40, 32, 5, 5)  # the bottom-right corner patch, 5 x 5 px inside
    [choice] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, [edge], acquisitions=["tp1"])
    tp1 = choice.choices["tp1"]
    assert tp1.s2 is not None and tp1.s2.id == valid
    assert tp1.nodata == tp1.unusable == 0.0
    assert nearer != valid
    # A block reaching past the tile is counted on its pixels inside only.
    [past] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, [Window(40, 32, 64, 64)],
                               acquisitions=["tp1"])
    assert past.choices["tp1"].s2.id == valid  # type: ignore[union-attr]


def test_reference_s1_and_s1_limit(fx: Fixture) -> None:
    _clear_s2(fx, 0)
    holey = np.full((ROWS, COLS), 50, np.uint8)
    near = fx.add("S1", 10, holey)
    far = fx.add("S1", -60, _edge_nodata())
    fx.add("S1", 100, _edge_nodata())  # beyond the 72 h gap
    [choice] = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, [Window(0, 0, 16, 16)])
    ref = choice.choices["t"]
    assert ref.s1.id == far != near  # type: ignore[union-attr]
    assert ref.s2 is not None and ref.s2.acquired == T0
    assert json.loads(json.dumps(choice.to_dict()))["acquisitions"]["t"]["s1"]["id"] == far


def test_determinism_and_block_order(fx: Fixture) -> None:
    twin_a = _clear_s2(fx, -400)
    _clear_s2(fx, 400)
    _clear_s2(fx, -400 + 0.0)
    for h in (-400, 400):
        fx.add("S1", h, _edge_nodata())
    blocks = _blocks(8)
    first = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, blocks)
    again = choose_neighbours(fx.catalog, TILE, T0, LAYOUT, blocks[::-1])
    assert [c.to_dict() for c in first] == [c.to_dict() for c in again[::-1]]
    # Two equal dates: the smaller catalog id wins.
    assert {c.choices["tm1"].s2.id for c in first} == {twin_a}  # type: ignore[union-attr]
    assert len({c.key() for c in first}) == 1


def test_shipped_layout(fx: Fixture) -> None:
    layout = load_layout("os2-occitanie")
    tm1 = fx.add("S2", -300, _edge_nodata(), _full(5), _full(0))
    tp1 = fx.add("S2", 260, _edge_nodata(), _full(0), _full(0))
    for h in (-300, 0, 260):
        fx.add("S1", h + 24, _edge_nodata())
    [choice] = choose_neighbours(fx.catalog, TILE, T0, layout, [Window(0, 0, 45, 37)])
    assert choice.choices["tm1"].s2.id == tm1  # type: ignore[union-attr]
    assert choice.choices["tp1"].s2.id == tp1  # type: ignore[union-attr]
    assert not choice.fallback
    want = brute_force(fx, layout, [Window(0, 0, 45, 37)], ("tm1", "tp1"))
    assert _summary([choice]) == want


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"acquisitions": ["t"]}, LayoutError),
    ({"acquisitions": ["target"]}, LayoutError),
    ({"blocks": [Window(100, 100, 8, 8)]}, GridError),
    ({"blocks": []}, ArgumentError),
    ({"target": datetime(2020, 6, 1)}, ArgumentError),
    ({"tolerance": -1.0}, ArgumentError),
    ({"tile": "T99XXX"}, NoProductError),
])
def test_bad_arguments_are_typed_errors(fx: Fixture, kwargs: dict[str, Any],
                                        error: type[Exception]) -> None:
    args: dict[str, Any] = {"catalog": fx.catalog, "tile": TILE, "target": T0,
                            "layout": LAYOUT, "blocks": [Window(0, 0, 8, 8)], **kwargs}
    with pytest.raises(error):
        choose_neighbours(**args)


# Real data ---------------------------------------------------------------------------

REAL_LAYOUT = Layout.model_validate({"name": "real", "acquisitions": {
    "tm1": {"window_hours": [-360, -24], "s2": {"cloud": [0, 100], "nodata_max": 100},
            "s1": {"max_gap_hours": 96}},
    "t": {"reference": True, "s2": {"cloud": [0, 100]}, "s1": {"max_gap_hours": 96}},
    "tp1": {"window_hours": [24, 360], "s2": {"cloud": [0, 100], "nodata_max": 100},
            "s1": {"max_gap_hours": 96}},
}})


def test_real_catalog_matches_the_masks(tmp_path: Path) -> None:
    """On the sample tile, block fractions and choices agree with the masks themselves."""
    from decloud.archive import Archive
    from decloud.constants import MaskClass
    from decloud.index.stats import PatchGrid
    from decloud.processors.neighbours import block_stats
    from decloud.products import S2Product, open_product
    from tests.conftest import ARCHIVE

    archive = Archive.scan(ARCHIVE / "S2" / "T31UFS", ARCHIVE / "S1" / "T31UFS")
    with Catalog.create(tmp_path / "cat", patch_size=12) as catalog:
        assert not catalog.add(archive).failed
        tile = "T31UFS"
        grid = catalog.tile_grid(tile)
        assert grid is not None and (grid.width, grid.height) == (60, 66)  # last row partial
        records = catalog.records(tile, "S2")
        blocks = [Window(c, r, 24, 24) for r in range(0, 66, 24) for c in range(0, 60, 24)]
        ids = [r.id for r in records]
        stats = block_stats(PatchGrid(grid, 12), blocks, catalog.stats(ids, "nodata"),
                            catalog.stats(ids, "cloud"), catalog.stats(ids, "shadow"))
        # The truth: the masks' unusable pixels in each block (20 m: halve the windows).
        truth = np.zeros((len(records), len(blocks)))
        for k, record in enumerate(records):
            product = open_product(record.path)
            assert isinstance(product, S2Product)
            layer = product.mask(grid.at_resolution(20.0))
            bad = layer != MaskClass.CLEAR
            for b, w in enumerate(blocks):
                part = bad[w.row_off // 2:(w.row_off + w.height) // 2,
                           w.col_off // 2:(w.col_off + w.width) // 2]
                truth[k, b] = part.mean()
        # Patch-aligned blocks: only the catalog's rounding to whole percents separates them.
        assert np.abs(stats.fraction("unusable") - truth).max() <= 0.011
        target = records[len(records) // 2].acquired
        choices = choose_neighbours(catalog, tile, target, REAL_LAYOUT, blocks, tolerance=0)
        t_hours = records[len(records) // 2].hours
        s1 = catalog.records(tile, "S1")
        for b, choice in enumerate(choices):
            for name, sign in (("tm1", -1), ("tp1", 1)):
                chosen = choice.choices[name].s2
                assert chosen is not None
                side = [k for k, r in enumerate(records)
                        if 24 <= sign * (r.hours - t_hours) <= 360
                        and any(abs(q.hours - r.hours) <= 96 for q in s1)]
                best = min(truth[k, b] for k in side)
                k = ids.index(chosen.id)
                assert k in side and truth[k, b] <= best + 0.011
                assert choice.choices[name].s1 is not None
                assert abs(choice.choices[name].s1.hours - chosen.hours) <= 96  # type: ignore[union-attr]
        # The clouds differ from block to block, and so do the choices.
        assert len({c.key() for c in choices}) > 1
