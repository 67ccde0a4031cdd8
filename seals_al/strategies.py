"""Selection strategies: pure functions from model outputs to scores (higher = pick first).

- maxent: entropy of the predicted class probabilities (uncertainty sampling).
- id: information density, entropy(x) * density(x) ** beta, density = mean cosine similarity of x
  to its k nearest neighbours (from the kNN graph, never all pairs).
- mlp: most-likely positive (active search), the predicted probability of the positive class.
- random: an independent uniform key per example.

Ties are broken by :func:`hash_keys`, a seeded key per (seed, round, row id): deterministic, and
independent of where an example sits in a pool or a shard, so a tie never goes to the first one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from seals_al.errors import SealsError

_TIEBREAK, _RANDOM = 0, 1


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of Bernoulli(p); 0 at p in {0, 1}, ln 2 at p = 0.5."""
    # minimum/maximum rather than np.clip: the same values, without clip's per-call overhead,
    # which shows when SEALS scores a pick's few arrivals at a time.
    p = np.minimum(np.maximum(np.asarray(p, dtype=np.float64), 1e-12), 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def maxent(proba: np.ndarray, density: np.ndarray | None, keys: np.ndarray) -> np.ndarray:
    return binary_entropy(proba)


def information_density(
    proba: np.ndarray, density: np.ndarray | None, keys: np.ndarray, beta: float = 1.0
) -> np.ndarray:
    if density is None:
        raise SealsError("information density needs the kNN density of every candidate")
    return binary_entropy(proba) * np.clip(density, 0.0, None) ** beta


def most_likely_positive(proba: np.ndarray, density: np.ndarray | None, keys: np.ndarray) -> np.ndarray:
    return np.asarray(proba, dtype=np.float64)


def random_scores(proba: np.ndarray, density: np.ndarray | None, keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.float64)


@dataclass(frozen=True)
class Strategy:
    """A named scoring function ``(proba, density, keys) -> scores``.

    ``proba`` is P(positive) per candidate, ``density`` the kNN density (only when
    ``needs_density``), ``keys`` seeded uniform keys in [0, 1) (used by random).
    """

    name: str
    fn: Callable[[np.ndarray, np.ndarray | None, np.ndarray], np.ndarray]
    needs_density: bool = False
    is_random: bool = False

    def scores(self, proba: np.ndarray, density: np.ndarray | None, keys: np.ndarray) -> np.ndarray:
        return self.fn(proba, density, keys)


STRATEGIES: dict[str, Strategy] = {
    "maxent": Strategy("maxent", maxent),
    "id": Strategy("id", information_density, needs_density=True),
    "mlp": Strategy("mlp", most_likely_positive),
    "random": Strategy("random", random_scores, is_random=True),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise SealsError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_keys(row_ids: np.ndarray, seed: int, round_index: int, stream: int = _TIEBREAK) -> np.ndarray:
    """Uniform keys in [0, 1), a pure function of (seed, round, stream, row id)."""
    salt = _splitmix64(np.array([seed * 1_000_003 + round_index * 7 + stream], dtype=np.uint64))
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(row_ids).astype(np.uint64) ^ salt)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def tiebreak_keys(row_ids: np.ndarray, seed: int, round_index: int) -> np.ndarray:
    return hash_keys(row_ids, seed, round_index, _TIEBREAK)


def random_keys(row_ids: np.ndarray, seed: int, round_index: int) -> np.ndarray:
    return hash_keys(row_ids, seed, round_index, _RANDOM)
