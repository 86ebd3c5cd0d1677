"""Seeded samplers of layout tuples: random, constant per position, seasonal.

Every sampler is reproducible: the same catalog, layout, seed and arguments give the
same tuples in the same order. Samplers register in :data:`SAMPLERS` by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from decloud.errors import ArgumentError
from decloud.index.search import SampleTuple, TupleSearch

__all__ = ["SAMPLERS", "ConstantSampler", "RandomSampler", "Sampler", "SeasonalSampler"]

#: Samplers by name.
SAMPLERS: dict[str, type[Sampler]] = {}

# Rounds of redraws to replace duplicates before giving up (tiny archives).
_MAX_ROUNDS = 20


def _count(value: object, name: str, *, minimum: int) -> int:
    """An integer option of at least ``minimum`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ArgumentError(f"{name} must be an integer of at least {minimum}, not {value!r}",
                            field=name)
    return int(value)


class Sampler(ABC):
    """Draws tuples from a :class:`TupleSearch`.

    Args:
        seed: Seed of the sampler's random generator, a non-negative integer.

    Raises:
        ArgumentError: The seed is not a non-negative integer, or an option is not one
            the sampler takes (``field`` names it).
    """

    name: ClassVar[str] = ""

    def __init__(self, seed: int = 0, **options: object) -> None:
        self.seed = _count(seed, "seed", minimum=0)
        if options:
            raise ArgumentError(
                f"the {self.name or type(self).__name__} sampler takes no option "
                f"{', '.join(sorted(options))} (options: {', '.join(self.options) or 'none'})",
                field=sorted(options)[0])

    #: The options the sampler takes besides the seed.
    options: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            SAMPLERS[cls.name] = cls

    @abstractmethod
    def sample(self, search: TupleSearch, n: int,
               allowed: np.ndarray | None = None) -> list[SampleTuple]:
        """Draw up to ``n`` distinct tuples among patch positions where ``allowed``."""

    @staticmethod
    def _weights(search: TupleSearch, allowed: np.ndarray | None) -> np.ndarray:
        counts = search.tuple_counts_by_reference().astype(np.float64)
        if allowed is not None:
            counts *= allowed[None].astype(np.float64)
        return counts

    @staticmethod
    def _draw_unique(search: TupleSearch, rng: np.random.Generator, weights: np.ndarray,
                     n: int) -> list[SampleTuple]:
        """Draw distinct tuples, duplicates redrawn.

        A (ref, row, col) cell is drawn with probability proportional to ``weights``,
        then a tuple uniformly within it.
        """
        flat = weights.ravel()
        total = flat.sum()
        out: list[SampleTuple] = []
        seen: set[tuple[object, ...]] = set()
        if total <= 0 or n <= 0:
            return out
        cdf = np.cumsum(flat)
        for _ in range(_MAX_ROUNDS):
            need = n - len(out)
            cells = np.searchsorted(cdf, rng.random(need) * total, side="right")
            for cell in np.minimum(cells, flat.size - 1):
                ref, row, col = np.unravel_index(int(cell), weights.shape)
                tup = search.draw(rng, int(ref), int(row), int(col))
                key = (tup.row, tup.col, tuple(sorted(tup.s2.items(), key=str)),
                       tuple(sorted(tup.s1.items(), key=str)))
                if key not in seen:
                    seen.add(key)
                    out.append(tup)
            if len(out) >= n:
                break
        return out[:n]


class RandomSampler(Sampler):
    """Uniform over all tuples of the allowed positions."""

    name = "random"

    def sample(self, search: TupleSearch, n: int,  # noqa: D102
               allowed: np.ndarray | None = None) -> list[SampleTuple]:
        rng = np.random.default_rng(self.seed)
        return self._draw_unique(search, rng, self._weights(search, allowed), n)


class ConstantSampler(Sampler):
    """At most ``per_position`` tuples at each patch position: spatial balance.

    Args:
        seed: Seed.
        per_position: Tuples drawn at each position (fewer where fewer exist).

    Raises:
        ArgumentError: ``per_position`` is below 1.
    """

    name = "constant"
    options = ("per_position",)

    def __init__(self, seed: int = 0, per_position: int = 1, **options: object) -> None:
        super().__init__(seed, **options)
        self.per_position = _count(per_position, "per_position", minimum=1)

    def sample(self, search: TupleSearch, n: int,  # noqa: D102
               allowed: np.ndarray | None = None) -> list[SampleTuple]:
        rng = np.random.default_rng(self.seed)
        weights = self._weights(search, allowed)
        rows, cols = np.nonzero(weights.sum(axis=0) > 0)
        order = rng.permutation(len(rows))
        out: list[SampleTuple] = []
        for i in order:
            if len(out) >= n:
                break
            cell = np.zeros_like(weights)
            cell[:, rows[i], cols[i]] = weights[:, rows[i], cols[i]]
            out += self._draw_unique(search, rng, cell, min(self.per_position, n - len(out)))
        return out


class SeasonalSampler(Sampler):
    """Like random, but each season of the reference date gets an equal share.

    Seasons are meteorological (DJF, MAM, JJA, SON) of the reference S2 product's
    date. Each of the k seasons that has tuples at the allowed positions gets 1/k of
    the draws on average; within a season, draws are uniform over its tuples, as with
    :class:`RandomSampler`.
    """

    name = "seasonal"

    def sample(self, search: TupleSearch, n: int,  # noqa: D102
               allowed: np.ndarray | None = None) -> list[SampleTuple]:
        rng = np.random.default_rng(self.seed)
        weights = self._weights(search, allowed)
        # Meteorological seasons: DJF, MAM, JJA, SON.
        seasons = np.array([(r.acquired.month % 12) // 3 for r in search.stack.s2], int)
        per_season = np.array([weights[seasons == s].sum() for s in range(4)])
        present = per_season > 0
        if not present.any():
            return []
        scale = np.where(present, 1.0 / np.maximum(per_season, 1e-12), 0.0)
        return self._draw_unique(search, rng, weights * scale[seasons][:, None, None], n)
