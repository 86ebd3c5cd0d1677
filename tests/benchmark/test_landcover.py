"""The land-cover check: figures equal scikit-learn's own, on a tiny seeded case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, cohen_kappa_score

from decloud.benchmark.landcover import (
    gap_recovered,
    landcover_markdown,
    run_landcover,
    split_pixels,
)
from decloud.errors import ArgumentError


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 24 x 24 image of 3 classes with class-dependent spectra and noise, label 0 on
    the border (no data)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((24, 24), dtype=np.int64)
    labels[1:-1, 1:12] = 1
    labels[1:-1, 12:18] = 2
    labels[1:-1, 18:-1] = 3
    spectra = np.array([[0.0, 0.0, 0.0], [0.05, 0.08, 0.3], [0.1, 0.12, 0.15],
                        [0.2, 0.2, 0.25]])
    image = spectra[labels] + rng.normal(0.0, 0.03, (24, 24, 3))
    return image.astype(np.float32), labels


def test_split_is_disjoint_seeded_and_ignores_no_data() -> None:
    _, labels = _scene()
    train, test = split_pixels(labels, test_fraction=0.25, seed=3)
    assert not (train & test).any()
    assert ((train | test) == (labels != 0)).all()
    assert test.sum() == round(0.25 * (labels != 0).sum())
    again = split_pixels(labels, test_fraction=0.25, seed=3)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)
    assert not np.array_equal(split_pixels(labels, test_fraction=0.25, seed=4)[1], test)
    with pytest.raises(ArgumentError):
        split_pixels(labels, test_fraction=1.0)


def test_figures_equal_sklearns_own() -> None:
    train_image, labels = _scene(0)
    truth, _ = _scene(1)  # another "date": same classes, other noise
    cut = np.zeros(labels.shape, dtype=bool)
    cut[4:14, 6:20] = True
    cloudy = truth.copy()
    cloudy[cut] = [0.45, 0.43, 0.6]  # a constant cloud spectrum
    half = truth.copy()
    half[cut & (np.arange(24)[None, :] % 2 == 0)] = [0.45, 0.43, 0.6]
    result = run_landcover(train_image, labels, truth, cloudy,
                           {"perfect": truth.copy(), "half": half}, labels, cut, seed=7,
                           trees=20)
    # Independent reference: the same seeded split and forest, scored by scikit-learn.
    train, test = split_pixels(labels, test_fraction=0.5, seed=7)
    forest = RandomForestClassifier(n_estimators=20, random_state=7, n_jobs=1)
    forest.fit(train_image[train].astype(np.float64), labels[train])
    rows = {r["image"]: r for r in result.rows}
    for name, image in (("clear truth", truth), ("cloudy", cloudy), ("half", half)):
        predicted = forest.predict(image[test].astype(np.float64))
        assert rows[name]["oa"] == accuracy_score(labels[test], predicted)
        assert rows[name]["kappa"] == cohen_kappa_score(labels[test], predicted)
        assert rows[name]["n_pixels"] == test.sum()
        under = (test & cut)[test]
        assert rows[name]["cut_oa"] == accuracy_score(labels[test & cut], predicted[under])
        assert rows[name]["cut_pixels"] == (test & cut).sum()
    assert result.train_pixels == train.sum()
    assert rows["clear truth"]["oa"] > rows["cloudy"]["oa"]
    assert rows["perfect"]["recovered"] == pytest.approx(1.0)
    assert rows["cloudy"]["recovered"] == pytest.approx(0.0)
    assert 0.0 < rows["half"]["recovered"] < 1.0
    assert result.best()["image"] == "perfect"
    text = landcover_markdown(result)
    assert "**MET: best perfect recovers 100.0 %" in text


def test_no_gap_is_said() -> None:
    assert gap_recovered(0.8, 0.9, 0.8) is None
    assert gap_recovered(0.5, 0.95, 1.0) == pytest.approx(0.9)
