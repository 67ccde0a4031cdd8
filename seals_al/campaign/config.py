"""A campaign's configuration, and creating a campaign: its configuration and seed labels.

The configuration is one object whose parts are the shared settings objects
(:class:`~seals_al.settings.DataConfig` for the data, :class:`~seals_al.settings.RoundConfig` for
how rounds learn); in YAML and in ``campaign.json`` it is one flat mapping of setting names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seals_al.campaign.layout import CONFIG, MAX_CONFIG_BYTES, SEED, seed_key
from seals_al.errors import SealsError, cut, shown
from seals_al.items import Items
from seals_al.labelformats.files import check_label_file
from seals_al.settings import (
    DEFAULT_BUDGET,
    DataConfig,
    RoundConfig,
    check_fits_u,
    check_positive_int,
    flat_names,
    from_flat,
    to_flat,
)
from seals_al.storage import local_file, open_storage
from seals_al.storage.base import AlreadyExistsError, Storage, check_key
from seals_al.storage.files import require_file
from seals_al.storage.uris import default_cache_dir, is_remote

REQUIRED = ("concept", "data", "seed_labels")
PATHS = ("data", "seed_labels", "embeddings", "index", "removed")  # relative to the YAML file


def _one_line(error: Exception) -> str:
    """A YAML error on one line: where it is and what is wrong (PyYAML's own message spans
    several lines, with a snippet of the file and a caret)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        context = f"{error.context}: " if error.context else ""
        text = f"line {mark.line + 1}, column {mark.column + 1}: {context}{error.problem}"
    else:
        text = str(error)
    return cut(" ".join(text.split()), 200)


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.safe_load without aliases: a campaign config has no use for them, and an alias bomb
    (a few lines that expand to gigabytes) must be refused, not expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(
                f"line {mark.line + 1}: aliases (*name) are not allowed in a campaign config"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        """A setting given twice is an error (YAML would keep the last one without a word)."""
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.YAMLError(f"line {line}: setting {key!r} is given more than once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class CampaignConfig:
    """What ``seals-al init`` reads from YAML and a campaign keeps in campaign.json."""

    concept: str
    # A label file (CSV, JSONL or Label Studio JSON; local or gs://) with the seed set. A
    # simulated campaign may leave it "" and draw its seeds from truth (seals_al.oracle).
    seed_labels: str
    dataset: DataConfig
    learning: RoundConfig = field(default_factory=RoundConfig)
    budget: int = DEFAULT_BUDGET
    # Whether the labels of items in the tombstone list (``removed``) still train the model while
    # the items are in the data. False: from the round after their removal they are kept only in
    # the audit history. An item gone from the data never trains.
    train_on_removed: bool = False
    # The labeling tool (seals_al.labeltools.registry: label_studio, terminal, oracle; None: label
    # files in the inbox only), its URL (the environment's wins over it) and, to use an existing
    # project instead of creating one, the project. An API key is never a setting.
    label_tool: str | None = None
    label_tool_url: str | None = None
    label_tool_project: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> CampaignConfig:
        path = Path(path)
        require_file(path)
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SealsError(f"{path}: over {MAX_CONFIG_BYTES:,} bytes; not a campaign config")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)  # a SafeLoader
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise SealsError(f"{path}: not valid YAML: {_one_line(e)}") from e
        if not isinstance(data, dict):
            raise SealsError(f"{path}: expected a mapping of settings")
        known = sorted(flat_names(cls))
        unknown = sorted(set(data) - set(known) - set(RENAMED))
        if unknown:
            raise SealsError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        missing = [name for name in REQUIRED if not data.get(name)]
        if missing:
            raise SealsError(f"{path}: missing setting(s) {', '.join(missing)}")
        for name in PATHS:
            value = data.get(name)
            # A path of the wrong type is left as it is, for the type check to name it.
            if isinstance(value, str) and value and not is_remote(value) and not Path(value).is_absolute():
                data[name] = str((path.parent / value).resolve())
        config = from_flat(cls, renamed(data, str(path)), str(path))
        config.check(str(path))
        return config

    @classmethod
    def from_json(cls, data: object, where: str) -> CampaignConfig:
        """Read campaign.json; settings added since it was written take their defaults."""
        if not isinstance(data, dict):
            raise SealsError(f"{where}: expected a mapping of settings")
        return from_flat(cls, renamed(data, where), where)

    def to_json(self) -> dict:
        return to_flat(self)

    def check(self, where: str) -> None:
        self.learning.check(where)
        check_positive_int(where, "budget", self.budget)
        if self.label_tool is not None and not (
            isinstance(self.label_tool, str) and self.label_tool.replace("_", "").isalnum()
        ):
            raise SealsError(f"{where}: label_tool must be a tool's name, got {shown(self.label_tool)}")
        url = self.label_tool_url
        if url and not url.startswith(("http://", "https://")):
            raise SealsError(f"{where}: label_tool_url must be an http(s):// URL, got {shown(url)}")


# Settings read under their old names: Label Studio was the only tool before label_tool.
RENAMED = {"label_studio_url": "label_tool_url", "label_studio_project": "label_tool_project"}


def renamed(data: dict, where: str) -> dict:
    """``data`` with the old Label Studio settings as ``label_tool: label_studio`` and its URL and
    project (an error when a setting is given under both names)."""
    out = {k: v for k, v in data.items() if k not in RENAMED}
    project = out.get("label_tool_project")
    if isinstance(project, int) and not isinstance(project, bool):  # a project id, as YAML reads it
        out["label_tool_project"] = str(project)
    old = [name for name in RENAMED if name in data]
    for name in old:
        if RENAMED[name] in data:
            raise SealsError(f"{where}: give {RENAMED[name]} or the older {name}, not both")
        value = data[name]
        out[RENAMED[name]] = None if value is None else str(value)
    if out.get("label_tool_url") or out.get("label_tool_project"):
        out.setdefault("label_tool", "label_studio")
    return out


def init(config: CampaignConfig, uri: str, seed_file: tuple[str, bytes] | None = None) -> Storage:
    """Create a campaign: write its configuration and seed labels (once).

    Args:
        config: the settings.
        uri: a local folder or gs://bucket/prefix.
        seed_file: (name, contents) of the seed labels; default: the file ``config.seed_labels``.

    Returns:
        The campaign's storage.
    """
    storage = open_storage(uri)
    if storage.exists(CONFIG):
        raise SealsError(f"{storage.where(CONFIG)}: a campaign exists here already")
    # A new or empty place (or one an interrupted init left its seed file in): a campaign is never
    # mixed into a folder of other files.
    foreign = next((key for key in storage.list() if not key.startswith(f"{SEED}/")), None)
    if foreign is not None:
        raise SealsError(
            f"{storage.uri}: not empty ({shown(foreign, 80)} is there) and not a campaign; "
            "create the campaign in a new or empty folder"
        )
    items = Items.load(config.dataset)  # fail now on a bad items file, not at round 0
    items.check_concept(config.concept)
    u = items.u_ids()
    check_fits_u(config.dataset, config.learning, len(u), items.source)
    name, data = seed_file or read_seed_file(config)
    seed_name = check_key(name, name)
    seeds = check_label_file(
        seed_name, data, config.concept, open_batch=u, labeled={}, known=set(items.ids), in_u=u
    )
    if len(set(seeds.new.values())) < 2:
        raise SealsError(f"{name}: the seed labels need at least one positive and one negative")
    storage.write_bytes(seed_key(seed_name), data)
    try:
        storage.write_json(CONFIG, {**config.to_json(), "seed_labels": seed_key(seed_name)}, once=True)
    except AlreadyExistsError as e:
        raise SealsError(f"{storage.where(CONFIG)}: a campaign exists here already") from e
    return storage


def ensure_campaign(
    config: CampaignConfig, uri: str, seed_file: Callable[[], tuple[str, bytes]] | None = None
) -> bool:
    """Create the campaign unless the same one exists (re-runs of a pipeline); a campaign with
    other settings at ``uri`` is an error, never overwritten.

    Args:
        config: the settings.
        uri: a local folder or gs://bucket/prefix.
        seed_file: gives (name, contents) of the seed labels, called only when the campaign is
            created; default: the file ``config.seed_labels``.

    Returns:
        True when it was created now.
    """
    config.check(uri)
    storage = open_storage(uri)
    if not storage.exists(CONFIG):
        init(config, uri, seed_file() if seed_file else None)
        return True
    stored = CampaignConfig.from_json(
        storage.read_json(CONFIG, MAX_CONFIG_BYTES), storage.where(CONFIG)
    ).to_json()
    given = config.to_json()
    differ = sorted(k for k in given if k != "seed_labels" and stored.get(k) != given[k])
    if differ:
        changes = "; ".join(f"{k}: {shown(stored.get(k))} there, {shown(given[k])} given" for k in differ)
        raise SealsError(f"{storage.where(CONFIG)}: a campaign with other settings exists here ({changes})")
    return False


def read_seed_file(config: CampaignConfig) -> tuple[str, bytes]:
    """(name, contents) of the seed label file that ``seed_labels`` names (local or gs://)."""
    if not config.seed_labels:
        raise SealsError(f"concept {shown(config.concept)}: no seed labels given (seed_labels)")
    path = local_file(config.seed_labels, config.dataset.cache_dir or default_cache_dir())
    require_file(path, config.seed_labels)
    return path.name, path.read_bytes()
