"""Settings and their defaults, in one place (see docs/ARCHITECTURE.md, "One vocabulary").

Every setting has one name, used unchanged in campaign YAML and ``campaign.json``, in the
simulation's ``summary.json``, as a CLI flag (``--index-factory`` for ``index_factory``) and as a
KFP parameter. The one exception is the three locations a pipeline passes between steps, which
KFP spells ``items_uri``, ``embeddings_uri`` and ``index_uri``; the components plumb them into
``data``, ``embeddings`` and ``index`` by keyword. Components and pipelines write defaults as
literals (KFP reads them from the signature); a test holds them equal to the ones here.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, TypeVar, get_args, get_type_hints

from seals_al.errors import SealsError, shown

STRATEGIES = ("maxent", "id", "mlp", "random")  # seals_al.strategies registers exactly these
MODES = ("seals", "global")
DEFAULT_STRATEGY = "maxent"
DEFAULT_MODE = "seals"
DEFAULT_FACTORY = "Flat"
DEFAULT_NPROBE = 16  # IVF lists an index probes per query unless told otherwise (faiss: 1)
LAYOUTS = ("single", "ondisk", "shards")  # index directory layouts (seals_al.index.directory)
MAX_SEED = 2**32 - 1  # seeds the solver (numpy's limit) and the tie-break keys
DEFAULT_K = 100  # neighbours per labeled example (the paper's k)
DEFAULT_BATCH_SIZE = 100  # b
DEFAULT_BUDGET = 1000
DEFAULT_EVAL_SPLIT = "test"
# A simulation (every round in one process) reads the embeddings and neighbour lists into RAM when
# the embeddings take at most this many MB (1M x 384-d is 1,465 MB), and memory-maps them otherwise.
DEFAULT_RAM_BUDGET_MB = 2048
# A trained index (IVF, PQ) kept for growing data is trained again, with the graph built again,
# once U has grown by more than this fraction since it was trained: its centroids and codes were
# fit to the data as it was then (docs/ARCHITECTURE.md, "Growing data"). HNSW and Flat only add.
RETRAIN_GROWTH = 0.5
SEED_POSITIVES, SEED_NEGATIVES = 5, 95  # the paper's seed set
EXPORT_PRECISIONS = (0.5, 0.8, 0.9, 0.95)  # where an exported model's operating thresholds go
WAIT_POLL_SECONDS = 60.0  # how often a wait for labels looks in the inbox
WAIT_TIMEOUT_SECONDS = 86_400.0  # and when it gives up

# What the simulation commands and pipelines assume of a labeled data set such as CLINC150:
# ground truth in "label", the evaluation split in "split". Campaigns assume neither.
SIMULATION_TRUTH_COLUMN = "label"
SIMULATION_SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class DataConfig:
    """Where the items are, which columns mean what, and how U's neighbours are found."""

    data: str  # the item table (CSV, JSONL or Parquet): a local path or gs://bucket/path
    id_column: str = "id"
    text_column: str = "text"
    truth_column: str | None = None  # ground truth, for metrics and the oracle only
    split_column: str | None = None  # None: no evaluation split, every row is in U
    eval_split: str = DEFAULT_EVAL_SPLIT
    embeddings: str | None = None  # precomputed: a store dir, .npy (item order) or .parquet
    embeddings_column: str = "embedding"  # the vector column of a .parquet
    index_factory: str = DEFAULT_FACTORY
    index: str | None = None  # a built index directory (seals-al build-index) instead of the factory
    cache_dir: str | None = None
    knn_graph: bool = True  # precompute U's neighbour lists once instead of one query per pick
    # A tombstone list: a text file of ids removed for retention or privacy, one per line (local or
    # gs://, read again every round). They leave the pool and every future batch; the data need not
    # change (seals_al.items.read_removed).
    removed: str | None = None


@dataclass(frozen=True)
class RoundConfig:
    """How each round trains and selects (the paper's defaults: b = k = 100, C = 1)."""

    strategy: str = DEFAULT_STRATEGY
    mode: str = DEFAULT_MODE
    k: int = DEFAULT_K
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0  # tie-breaks, random keys and the solver
    C: float = 1.0  # inverse regularization of the logistic regression

    def check(self, where: str) -> None:
        """Reject an unknown strategy or mode, or a count that is not a positive integer."""
        if self.strategy not in STRATEGIES:
            raise SealsError(
                f"{where}: unknown strategy {shown(self.strategy)}; choose from {', '.join(STRATEGIES)}"
            )
        if self.mode not in MODES:
            raise SealsError(f"{where}: unknown mode {shown(self.mode)}; choose from {', '.join(MODES)}")
        for name in ("k", "batch_size"):
            check_positive_int(where, name, getattr(self, name))
        seed = self.seed
        if not is_count(seed, 0, MAX_SEED):
            raise SealsError(f"{where}: seed must be an integer from 0 to {MAX_SEED:,}, got {shown(seed)}")
        C = self.C
        if isinstance(C, bool) or not isinstance(C, int | float) or not (C > 0 and math.isfinite(C)):
            raise SealsError(f"{where}: C must be a positive number, got {shown(C)}")


def lists_of(factory: str) -> int | None:
    """How many inverted lists an IVF faiss factory string asks for (``IVF4096,Flat``: 4096,
    ``PCA64,IVF1024_HNSW32,SQ8``: 1024), read from the string alone; None for an index without."""
    found = re.match(r"(?:[^,]*,)?IVF(\d+)", factory)
    return int(found.group(1)) if found else None


def check_fits_u(data: DataConfig, learning: RoundConfig, n_u: int, where: str) -> None:
    """Refuse, before anything is embedded, settings U cannot fill: more neighbours per example
    than U has other examples, or more IVF lists than U has rows (faiss would train on too few
    points, and round 0 would grow without bound)."""
    if learning.k > n_u - 1:
        raise SealsError(
            f"{where}: k is {learning.k}, but U has {n_u:,} examples, so each has at most "
            f"{max(n_u - 1, 0):,} neighbours; set k to at most {max(n_u - 1, 1):,}"
        )
    lists = None if data.index else lists_of(data.index_factory)
    if lists is not None and lists > n_u:
        raise SealsError(
            f"{where}: index_factory {shown(data.index_factory)} asks for {lists:,} IVF lists, but U "
            f"has {n_u:,} examples; use at most {n_u:,} lists (sqrt(|U|) to |U| / 250 is usual)"
        )


def is_count(value: object, low: int = 0, high: int | None = None) -> bool:
    """Whether ``value`` is an integer from ``low`` to ``high`` (a boolean, a float or a string
    is not one): what every count read from a file or an answer is checked with."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )


def check_positive_int(where: str, name: str, value: object) -> None:
    """A count setting: an integer of at least 1 (a boolean is not one)."""
    if not is_count(value, 1):
        raise SealsError(f"{where}: {name} must be a positive integer, got {shown(value)}")


T = TypeVar("T")


def to_flat(config: Any) -> dict:
    """A settings dataclass as one flat mapping: nested settings objects are merged in by their
    own field names (which never collide), so files stay flat and every key is a setting name."""
    out: dict = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out.update(to_flat(value) if is_dataclass(value) else {f.name: value})
    return out


def from_flat(cls: type[T], values: dict, where: str) -> T:
    """The inverse of :func:`to_flat`; an unknown key or a missing required one is an error."""
    unknown = sorted(set(values) - set(flat_names(cls)))
    if unknown:
        raise SealsError(
            f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(flat_names(cls)))}"
        )
    return _build(cls, values, where)


def flat_names(cls: type) -> list[str]:
    """Every flat setting name of a settings dataclass, nested ones included."""
    nested = _nested(cls)
    names = []
    for f in fields(cls):
        names += flat_names(nested[f.name]) if f.name in nested else [f.name]
    return names


def _nested(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are settings dataclasses themselves, with their classes."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}


def _build(cls: type[T], values: dict, where: str) -> T:
    nested, hints = _nested(cls), get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in nested:
            kwargs[f.name] = _build(nested[f.name], values, where)
        elif f.name in values:
            kwargs[f.name] = _typed(f.name, values[f.name], hints[f.name], where)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SealsError(f"{where}: missing setting {f.name}")
    return cls(**kwargs)


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "empty"}


def _typed(name: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` if it is of the setting's type (a boolean is not an integer; an integer is a
    number, made a float); else an error naming the setting and a short form of the value."""
    allowed = get_args(hint) or (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return value
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    expected = " or ".join(_NAMES[kind] for kind in allowed)
    raise SealsError(f"{where}: {name} must be {expected}, got {shown(value)}")
