"""Where everything of a campaign lives under its URI: every key is built here, nowhere else.

campaign.json                 the configuration (written once by init)
seed/<file>                   the seed labels as given
inbox/NNN/                    where labels for batch NNN are dropped (CSV, JSONL, Label Studio;
                              a Label Studio pull writes label-studio.json there)
rounds/NNN/                   written by one round, committed by COMMITTED, written last:
    labeled.jsonl             the labeled set after this round's ingest (a new version per round)
    relabels.jsonl            label changes recorded this round (id, old, new, source)
    ingested.json             every label file ingested so far, with its sha256 and report
    ingested/<sha256>/<file>  raw copies of this round's label files, by their bytes' digest
    model.json                the classifier (coefficients, no pickle) and the labels' sha256
    evaluation.json           AP, recall, ROC points and confusion matrix (ground truth known)
    metrics.json              the round record (seals_al.record.RoundRecord)
    data.json                 the data version the round ran on: items, tombstoned, index rows
    to_label.jsonl            the batch: id, text, score, strategy, round, rank, why it was picked
    to_label.labelstudio.json the batch as Label Studio tasks
    examples.npz              the ids, row ids and vectors of every example labeled or out for
                              labeling, for the data version in data.json: the next round's
                              stages take them from here instead of looking each one up
    pool/pool.npz, pool.json  the candidate pool after selection (SEALS mode)
    pool/vectors.npy          its members' vectors, so a stage on any machine restores the pool
                              in one read (kept for the last two rounds: it is derived data)
reports/                      rejection reports of label files
derived/                      what a campaign on gs:// builds from U for its tasks on other
                              machines, when the data has no published store to keep it beside:
                              prepared data, an embedded or imported store, neighbour graphs
labelstudio.json              the Label Studio project and every task pushed (seals_al.labeltools)
labelstudio.lock              held while a Label Studio push or pull talks to Label Studio
events/continued/NNN.json     who continued the campaign once batch NNN was answered (seals-al listen)
LOCK                          held while a stage runs (and while a pull writes into the inbox)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from seals_al.storage.base import check_key

CONFIG = "campaign.json"
SEED = "seed"
LOCK = "LOCK"
ROUNDS = "rounds"
DERIVED = "derived"
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class RoundKeys:
    """The keys of round ``r``'s folder and of the inbox its batch is answered in."""

    r: int

    @property
    def dir(self) -> str:
        return f"{ROUNDS}/{self.r:03d}"

    @property
    def inbox(self) -> str:
        return f"{INBOX}/{self.r:03d}"

    @property
    def labeled(self) -> str:
        return f"{self.dir}/labeled.jsonl"

    @property
    def relabels(self) -> str:
        return f"{self.dir}/relabels.jsonl"

    @property
    def ingested(self) -> str:
        return f"{self.dir}/ingested.json"

    def ingested_copy(self, key: str, sha256: str) -> str:
        """Where the raw copy of an ingested label file goes: in a folder named by its bytes'
        digest, under its own name, so two files share a copy only when their bytes are the same
        (``x/y.jsonl`` and ``x_y.jsonl`` once collided), and the key stays short whatever the
        file's path (a long name made the round fail after writing part of its folder)."""
        return f"{self.dir}/ingested/{sha256[:16]}/{key.rsplit('/', 1)[-1]}"

    @property
    def model(self) -> str:
        return f"{self.dir}/model.json"

    @property
    def evaluation(self) -> str:
        return f"{self.dir}/evaluation.json"

    @property
    def metrics(self) -> str:
        return f"{self.dir}/metrics.json"

    @property
    def data(self) -> str:
        return f"{self.dir}/data.json"

    @property
    def to_label(self) -> str:
        return f"{self.dir}/to_label.jsonl"

    @property
    def label_studio(self) -> str:
        return f"{self.dir}/to_label.labelstudio.json"

    @property
    def pool(self) -> str:
        return f"{self.dir}/pool"

    @property
    def examples(self) -> str:
        return f"{self.dir}/examples.npz"

    @property
    def committed(self) -> str:
        return f"{self.dir}/COMMITTED"


def round_of(key: str) -> int | None:
    """The round of a key under rounds/ (rounds/007/metrics.json -> 7); None for anything else
    there (a stray folder or file is no round)."""
    return _numbered(key)


INBOX = "inbox"


def inbox_round(key: str) -> int | None:
    """The batch an inbox key answers (inbox/007/labels.csv -> 7); None for anything else there."""
    return _numbered(key)


def _numbered(key: str) -> int | None:
    parts = key.split("/")
    return int(parts[1]) if len(parts) >= 3 and len(parts[1]) == 3 and parts[1].isdigit() else None


LABEL_STUDIO_RECORD = "labelstudio.json"
LABEL_STUDIO_LOCK = "labelstudio.lock"  # one push or pull at a time, without the campaign's LOCK
LABEL_STUDIO_EXPORT = "label-studio.json"  # what a pull writes into the open batch's inbox


def label_studio_export(r: int) -> str:
    """Where a Label Studio pull puts batch ``r``'s annotations (seals_al.labeltools)."""
    return f"{RoundKeys(r).inbox}/{LABEL_STUDIO_EXPORT}"


def seed_key(name: str) -> str:
    return f"{SEED}/{name}"


def rejection_report(key: str, version: str) -> str:
    """Where the report of one version of a rejected label file goes: its path, made one name
    and cut to fit, then a digest of the whole path (two paths never share a report) and the
    version's tag."""
    of_key = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"reports/{_fit(flat_name(key), 200)}-{of_key}-{version[:12]}.json"


def continued_key(r: int) -> str:
    """The claim of whoever continues the campaign after batch ``r`` is answered (seals-al listen)."""
    return f"events/continued/{r:03d}.json"


def oracle_labels(r: int) -> str:
    """The simulated labeler's answers for batch ``r``."""
    return f"{RoundKeys(r).inbox}/oracle.jsonl"


def terminal_labels(r: int) -> str:
    """The terminal labeler's answers for batch ``r``."""
    return f"{RoundKeys(r).inbox}/terminal.jsonl"


def concept_folder(root: str, concept: str) -> str:
    """A campaign URI per concept under ``root`` (many concepts in one pipeline)."""
    return f"{root.rstrip('/')}/{check_key(concept, 'concept')}"


def flat_name(key: str) -> str:
    return key.replace("/", "_")


def _fit(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes of UTF-8, never inside a character."""
    return name.encode()[:limit].decode(errors="ignore")
