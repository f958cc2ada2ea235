"""modelsvc.metrics against sklearn on random data (with ties) and on hand-made cases; rank_auc (numpy, for the
training loop) must agree with roc_auc (sklearn) everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from modelsvc.metrics import brier_score, expected_calibration_error, log_loss, rank_auc
from modelsvc.metrics import roc_auc as sk_based_roc_auc

AUCS = pytest.mark.parametrize("roc_auc", [sk_based_roc_auc, rank_auc], ids=["sklearn", "rank"])


def _data(seed: int, n: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    if decimals is not None:  # many ties
        p = np.round(p, decimals)
    y = (rng.random(n) < p).astype(int)
    return y, p


@AUCS
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1, 2])
def test_auc_matches_sklearn_with_ties(roc_auc, seed: int, decimals: int | None) -> None:
    y, p = _data(seed, 2000, decimals)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_log_loss_and_brier_match_sklearn(seed: int) -> None:
    y, p = _data(seed, 1500)
    p[:3] = [0.0, 1.0, 1e-20]  # clipping at the edges
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, np.clip(p, 1e-15, 1 - 1e-15)), rel=1e-12)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [2, 10, 15])
def test_calibration_error_matches_sklearn_calibration_curve(seed: int, bins: int) -> None:
    y, p = _data(seed, 3000, decimals=1)  # values on bin edges too
    prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    ids = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], p)  # sklearn's documented uniform binning
    counts = np.bincount(ids, minlength=bins)
    counts = counts[counts > 0]
    expected = float(np.sum(counts * np.abs(prob_true - prob_pred)) / counts.sum())
    assert expected_calibration_error(y, p, bins) == pytest.approx(expected, abs=1e-12)


@AUCS
def test_hand_made_cases(roc_auc) -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    assert roc_auc([0, 1, 1], [0.3, 0.3, 0.7]) == 0.75  # one tied pair counts half
    # perfectly calibrated bins: two bins, rates equal to the predictions
    assert expected_calibration_error([0, 1, 0, 0, 1, 1, 1, 0], [0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75],
                                      bins=2) == pytest.approx(0.0, abs=1e-12)
    # one bin, mean prediction 0.9, label rate 0.5
    assert expected_calibration_error([0, 1], [0.9, 0.9], bins=10) == pytest.approx(0.4)
    assert brier_score([1, 0], [1.0, 0.5]) == pytest.approx(0.125)


@AUCS
def test_undefined_cases_are_nan(roc_auc) -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))  # one class
    assert math.isnan(roc_auc([0, 1], [0.2, float("nan")]))
    assert math.isnan(expected_calibration_error([0, 1], [0.2, float("nan")]))
    assert math.isnan(log_loss([], []))
    assert math.isnan(brier_score([], []))
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1], [0.5])
