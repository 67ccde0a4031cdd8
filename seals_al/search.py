"""Start from words: the items of U nearest to a text, in the campaign's own index, embedded with
the campaign's own model (``seals-al search``). What a person looks at to find the first positives
of a new concept, and a file they can label.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from seals_al.errors import SealsError
from seals_al.index.build import search as knn
from seals_al.store import l2_normalize

if TYPE_CHECKING:
    from seals_al.campaign import Campaign

MAX_QUERY_CHARS = 2000
SEARCH_COLUMNS = ("id", "label", "similarity", "text")  # a label file once "label" is filled in


def query_vectors(texts: Sequence[str], store_model: str, dim: int) -> np.ndarray:
    """The texts embedded as the items were (the store's model), L2-normalized."""
    from seals_al.encoder import TEXT_MODEL, MiniLMEncoder

    texts = [t.strip() for t in texts]
    if not texts or any(not t for t in texts):
        raise SealsError("a query needs at least one non-empty text")
    if any(len(t) > MAX_QUERY_CHARS for t in texts):
        raise SealsError(f"a query text is over {MAX_QUERY_CHARS:,} characters")
    if store_model != TEXT_MODEL:
        raise SealsError(
            f"the items were embedded with {store_model!r}; a text query is embedded with {TEXT_MODEL!r} "
            "and is only comparable with items embedded by it"
        )
    vectors = np.asarray(MiniLMEncoder().encode(list(texts)), dtype=np.float32)
    if vectors.shape[1] != dim:
        raise SealsError(f"the query vectors have dimension {vectors.shape[1]}; the items' have {dim}")
    return l2_normalize(vectors, texts, "the query")


def nearest(campaign: Campaign, texts: Sequence[str], k: int = 20) -> list[dict]:
    """The ``k`` items of U nearest to any of ``texts`` (each item once, at its best similarity,
    best first), with whether each is labeled or out for labeling now. Tombstoned items are left
    out; ties break by row id."""
    if k < 1:
        raise SealsError(f"--k must be a positive number of items, got {k}")
    dataset = campaign.dataset()
    vectors = query_vectors(texts, dataset.store.model, dataset.store.dim)
    removed = set(dataset.removed_rows().tolist())
    # Tombstoned rows are still in the index: asked for enough more to fill k without them (up to
    # 10k more; past that, fewer than k may come back near a crowd of removed items).
    D, I = knn(dataset.index, vectors, k + min(len(removed), 10 * k))
    best: dict[int, float] = {}
    for sims, rows in zip(D, I, strict=True):
        for sim, row in zip(sims.tolist(), rows.tolist(), strict=True):
            if row >= 0 and row not in removed and sim > best.get(row, -np.inf):
                best[row] = sim
    ranked = sorted(best.items(), key=lambda pair: (-pair[1], pair[0]))[:k]
    rows = np.asarray([row for row, _ in ranked], dtype=np.int64)
    ids, item_texts = dataset.ids_and_texts(rows, rows)
    state = campaign.state()
    out = []
    for (_, sim), item, text in zip(ranked, ids, item_texts, strict=True):
        labeled = state.labeled.get(item)
        out.append(
            {
                "id": item,
                "similarity": round(float(sim), 6),
                "text": text,
                "labeled": None if labeled is None else int(labeled["label"]),
                "in_batch": item in state.batch_ids,
            }
        )
    return out


def label_file(found: list[dict]) -> bytes:
    """The items found as a CSV to label: fill in ``label`` (1/0, yes/no, the concept or not),
    delete the rows left unanswered, and drop it into the inbox (or name it as ``seed_labels``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, SEARCH_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in found:
        labeled = row.get("labeled")
        writer.writerow({**row, "label": "" if labeled is None else labeled})
    return out.getvalue().encode()


def is_search_file(data: bytes) -> bool:
    """Whether these bytes are a file :func:`label_file` wrote (what ``--out`` may replace)."""
    return data.split(b"\n", 1)[0] == ",".join(SEARCH_COLUMNS).encode()
