"""A campaign's examples as a round leaves them: the external id, row id and vector of every example
labeled or out for labeling, saved with the round (``rounds/NNN/examples.npz``) for the data
version its ``data.json`` names.

The next round's stages, each perhaps on a machine that has never seen the campaign, take these
from one small object instead of looking each id up and reading each row: train fits on the
labeled rows' vectors, select excludes the newly labeled rows and names the examples a pick was
reached from. An example that is not here (a seed, before round 0) is looked up as before. Plain
arrays in an .npz, never a pickle.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from seals_al.arrays import npz_bytes
from seals_al.errors import SealsError
from seals_al.storage.base import NotFoundError, Storage


def save(storage: Storage, key: str, ids: Sequence[str], rows: np.ndarray, vectors: np.ndarray) -> None:
    """Write the examples (ids, their row ids and vectors, in one order) as one object."""
    encoded = [i.encode() for i in ids]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    data = {
        "ids": np.frombuffer(b"".join(encoded), np.uint8),
        "offsets": offsets,
        "rows": np.asarray(rows, np.int64),
        "vectors": np.asarray(vectors, np.float32),
    }
    storage.write_bytes(key, npz_bytes(data))


def load(storage: Storage, key: str) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """(ids, row ids, vectors) as saved, or None when the round saved none (written before
    rounds did)."""
    try:
        raw = storage.read_bytes(key)
    except NotFoundError:
        return None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as saved:
            blob, offsets = saved["ids"].tobytes(), saved["offsets"]
            rows, vectors = saved["rows"], saved["vectors"]
    except (ValueError, KeyError, OSError) as e:
        raise SealsError(f"{storage.where(key)}: not a saved set of examples ({e})") from e
    ids = [blob[a:b].decode() for a, b in pairwise(offsets.tolist())]
    if len(ids) != len(rows) or vectors.ndim != 2 or len(vectors) != len(rows):
        raise SealsError(f"{storage.where(key)}: ids, rows and vectors of different lengths")
    return ids, rows, vectors
