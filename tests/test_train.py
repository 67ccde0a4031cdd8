"""Training and evaluation on their own: the classifier, its JSON form, AP and the UI curves."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from seals_al.errors import SealsError
from seals_al.train import (
    SIGMOID_LOOP_MAX,
    LinearModel,
    average_precision,
    classification_curves,
    fit_logistic,
    sigmoid,
)


def data(n: int = 300, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced, overlapping classes: 10% positives shifted along the first axis."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, 0] += 2.0 * y
    return x, y


def test_fit_is_balanced_logistic_regression():
    x, y = data()
    model = fit_logistic(x, y, C=0.5, seed=3)
    reference = LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000, random_state=3).fit(x, y)
    np.testing.assert_allclose(model.coef, reference.coef_[0], rtol=1e-6)
    np.testing.assert_allclose(model.predict_proba(x), reference.predict_proba(x)[:, 1], rtol=1e-5)
    # Balanced class weights: most positives score above 0.5 although they are a tenth of the rows.
    assert (model.predict_proba(x[y == 1]) > 0.5).mean() > 0.6


def test_one_class_cannot_be_trained_on():
    x, _ = data()
    with pytest.raises(SealsError, match="the labeled set has only class 0"):
        fit_logistic(x, np.zeros(len(x), int))


def test_the_model_round_trips_through_json_without_pickle():
    x, y = data()
    model = fit_logistic(x, y)
    text = json.dumps(model.to_json())
    again = LinearModel.from_json(json.loads(text))
    assert json.loads(text)["kind"] == "logistic"
    np.testing.assert_array_equal(again.decision_function(x), model.decision_function(x))


def test_probabilities_stay_finite_for_extreme_scores():
    model = LinearModel(np.asarray([1e4, -1e4]), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        p = model.predict_proba(np.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32))
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.5])


@pytest.mark.parametrize("n", [12, SIGMOID_LOOP_MAX, SIGMOID_LOOP_MAX + 1])
def test_sigmoid_is_scipys_expit_bit_for_bit(n):
    """Both ways the sigmoid is computed (a loop over math.exp for short arrays, SciPy above) give
    expit's values exactly, extremes included: a last-bit difference can change a tie's winner."""
    rng = np.random.default_rng(n)
    edges = [0.0, -0.0, 709.78, -709.78, -709.79, -745.2, -746.0, 1e4, -1e4, np.inf, -np.inf, np.nan]
    z = np.concatenate([edges, rng.normal(scale=20.0, size=n - len(edges))])
    got = sigmoid(z)
    assert got.dtype == np.float64
    assert got.shape == z.shape
    np.testing.assert_array_equal(got.view(np.uint64), expit(z).view(np.uint64))
    np.testing.assert_array_equal(
        sigmoid(z.reshape(-1, 1).astype(np.float32)).ravel(), expit(z.astype(np.float32).astype(np.float64))
    )


def test_average_precision_is_sklearns_and_needs_a_positive():
    x, y = data()
    scores = fit_logistic(x, y).decision_function(x)
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))
    assert average_precision([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == 1.0
    with pytest.raises(SealsError, match="the evaluation set has no positives"):
        average_precision(np.zeros(4), np.arange(4.0))


def test_classification_curves_for_the_ui():
    y = np.asarray([0, 0, 1, 1, 0, 1])
    scores = np.asarray([-3.0, -1.0, 2.0, 0.5, 0.2, -0.1])  # P >= 0.5 where the score is >= 0
    curves = classification_curves(y, scores)
    assert curves["categories"] == ["negative", "positive"]
    # rows: truth negative, positive; columns: predicted negative, positive
    assert curves["confusion_matrix"] == [[2, 1], [1, 2]]
    assert curves["fpr"][0] == 0.0
    assert (curves["fpr"][-1], curves["tpr"][-1]) == (1.0, 1.0)
    assert max(curves["thresholds"]) <= 1.0, "probabilities, never sklearn's +inf"


def test_long_roc_curves_are_thinned_keeping_both_ends():
    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.3).astype(int)
    scores = rng.normal(size=5000) + y
    full = classification_curves(y, scores, max_points=100_000)
    thin = classification_curves(y, scores, max_points=50)
    assert len(full["fpr"]) > 50
    assert len(thin["fpr"]) <= 50
    assert (thin["fpr"][0], thin["fpr"][-1]) == (full["fpr"][0], full["fpr"][-1])
    assert np.all(np.diff(thin["fpr"]) >= 0)
