"""Training and evaluation: logistic regression (class_weight="balanced"), kept as plain
coefficients so it can be saved as JSON and applied to millions of rows without sklearn overhead.

scikit-learn is imported only by the functions that fit or evaluate: it takes over a second to
import, and the stages that only apply a model (select, and every stage that merely reads a
campaign) should not pay for it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from seals_al.errors import SealsError

SIGMOID_LOOP_MAX = 50_000  # up to this many values, a loop costs less than importing SciPy


def _expit(v: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-v))
    except OverflowError:  # exp(-v) beyond the largest double, inf in C: the sigmoid is 0
        return 0.0


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``scipy.special.expit`` value for value (float64): 1 / (1 + exp(-z)) with the C library's
    exp, bit for bit (a test compares them).

    Up to :data:`SIGMOID_LOOP_MAX` values are computed by a loop over ``math.exp``, the same exp,
    so that a stage which only applies a model (select scores a few thousand pool members) does
    not import SciPy, 0.3 s of its time. numpy's own exp is not a substitute: it differs from the
    C library's in the last bit for about 2% of values, which changes the winner of a close tie.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.size > SIGMOID_LOOP_MAX:
        from scipy.special import expit

        return expit(z)
    return np.fromiter(map(_expit, z.ravel().tolist()), np.float64, count=z.size).reshape(z.shape)


@dataclass(frozen=True)
class LinearModel:
    """P(positive | x) = sigmoid(x . coef + intercept)."""

    coef: np.ndarray
    intercept: float
    _coef32: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_coef32", np.asarray(self.coef, dtype=np.float32))

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32) @ self._coef32 + np.float32(self.intercept)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class per row (float64)."""
        return sigmoid(self.decision_function(x))

    def to_json(self) -> dict:
        return {
            "kind": "logistic",
            "coef": self.coef.astype(float).tolist(),
            "intercept": float(self.intercept),
        }

    @classmethod
    def from_json(cls, data: dict) -> LinearModel:
        return cls(np.asarray(data["coef"], dtype=np.float64), float(data["intercept"]))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, C: float = 1.0, seed: int = 0) -> LinearModel:
    """Fit a balanced logistic regression on labeled embeddings.

    Args:
        x: float32 [n, dim].
        y: 0/1 labels [n]; both classes must be present.
        C: inverse regularization strength.
        seed: solver seed.

    Returns:
        The fitted model as coefficients.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        raise SealsError(f"cannot train: the labeled set has only class {int(y[0]) if len(y) else '-'}")
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit(x, y)
    return LinearModel(clf.coef_[0].astype(np.float64), float(clf.intercept_[0]))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of scores against 0/1 truth (sklearn's definition)."""
    from sklearn.metrics import average_precision_score

    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        raise SealsError("average precision is undefined: the evaluation set has no positives")
    return float(average_precision_score(y_true, scores))


def classification_curves(y_true: np.ndarray, scores: np.ndarray, max_points: int = 200) -> dict:
    """The ROC curve (at most ``max_points`` points, ends kept) and the confusion matrix at
    P(positive) >= 0.5, on the probability scale, as plain lists for JSON and the KFP UI.

    Args:
        y_true: 0/1 truth [n].
        scores: decision-function values [n].
        max_points: the most ROC points kept.
    """
    from sklearn.metrics import confusion_matrix, roc_curve

    y_true = np.asarray(y_true).astype(int)
    proba = sigmoid(scores)
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn's first threshold is +inf
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    matrix = confusion_matrix(y_true, (proba >= 0.5).astype(int), labels=[0, 1])
    return {
        "fpr": fpr.tolist(),
        "tpr": tpr.tolist(),
        "thresholds": thresholds.tolist(),
        "categories": ["negative", "positive"],
        "confusion_matrix": matrix.tolist(),
    }
