"""The one small protocol every labeling tool speaks, and how the campaign chooses its tool.

A tool moves the open batch to people and their answers back into the open round's inbox
(``inbox/NNN/``), as a label file the ingest validates like any other
(:mod:`seals_al.labelformats`). Three calls:

- ``push()``: make the open batch's items available to label (idempotent: a retry adds nothing);
- ``pull()``: write the answers given so far into the inbox (idempotent: nothing new, nothing
  written);
- ``progress()``: how many of the batch's items are answered, to tell whether to pull and go on.

The campaign chooses its tool by the setting ``label_tool`` (with ``label_tool_url`` and
``label_tool_project`` where the tool has them); the cluster may give the tool's URL and key as
``LABEL_TOOL_URL`` and ``LABEL_TOOL_API_KEY`` (the pipelines' Secret), or by the tool's own
variables. Label files dropped into the inbox by hand always work, with or without a tool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from seals_al.errors import SealsError

if TYPE_CHECKING:
    from seals_al.campaign import Campaign, State

ENV_TOOL = "LABEL_TOOL"  # the tool's name, when the campaign names none
ENV_URL = "LABEL_TOOL_URL"
ENV_KEY = "LABEL_TOOL_API_KEY"


class LabelToolError(SealsError):
    """A tool refused a request or could not be reached (``status``: an HTTP status, if any)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LabelToolUnreachable(LabelToolError):
    """No answer after every retry (down, restarting, or slow): a wait asks again later."""


class Done(Protocol):
    """What a push or a pull did, as one line for a person."""

    def summary(self) -> str: ...


class Pushed(Done, Protocol):
    @property
    def where(self) -> str:
        """Where people label the batch (a URL, or the command to run)."""
        ...

    @property
    def items(self) -> int:
        """How many items of the open batch the tool holds."""
        ...


class Pulled(Done, Protocol):
    @property
    def written(self) -> str | None:
        """The inbox file written (a campaign key), None when nothing changed."""
        ...


@dataclass(frozen=True)
class Note:
    """A push or a pull of a tool with nothing of its own to report but a line."""

    text: str
    where: str = ""
    items: int = 0
    written: str | None = None

    def summary(self) -> str:
        return self.text


@dataclass(frozen=True)
class Progress:
    """How far people are with the open batch."""

    answered: int  # items with an answer
    items: int  # items waited on
    note: str = ""  # anything else to say (deleted tasks, skips), as "; ..." clauses

    def line(self, title: str) -> str:
        """How far along, as one line: "3/10 item(s) answered in Label Studio; ..." """
        return f"{self.answered}/{self.items} item(s) answered in {title}{self.note}"

    def reached(self, fraction: float) -> bool:
        """Whether ``fraction`` of the items waited on are answered (at least one)."""
        return self.items > 0 and self.answered >= max(1, math.ceil(fraction * self.items - 1e-9))


class BoundTool:
    """A tool that needs nothing but its campaign (no server, no setting)."""

    def __init__(self, campaign: Campaign):
        self.campaign = campaign

    @classmethod
    def of(cls, campaign: Campaign) -> BoundTool:
        return cls(campaign)


class LabelTool(Protocol):
    """A labeling tool bound to one campaign (made by ``Tool.of(campaign)``)."""

    name: str  # as the registry and settings call it
    title: str  # as messages call it

    def push(self) -> Pushed: ...

    def pull(self) -> Pulled: ...

    def progress(self) -> Progress: ...


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise SealsError(f"the fraction of the batch to wait for must be in (0, 1], got {fraction:g}")


def open_state(campaign: Campaign) -> State:
    """The campaign's state (read once) with a batch open, or an error saying how to open one."""
    state = campaign.state()
    if state.round < 0:
        raise SealsError(
            f"{campaign.storage.uri}: no batch yet; run `seals-al round` to publish the first one"
        )
    return state
