"""Which labeling tools there are, and which one a campaign uses.

Adding a tool: a module with a class that has ``name`` and ``of(campaign)`` and speaks
:class:`~seals_al.labeltools.base.LabelTool`, one line in :data:`TOOLS`, and its tests. The CLI,
components, pipelines and the Argo template speak only of "the tool", so none of them changes.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

from seals_al.errors import SealsError, shown
from seals_al.labeltools.base import ENV_TOOL, ENV_URL, LabelTool

if TYPE_CHECKING:
    from seals_al.campaign import Campaign

# name -> "module:class" (imported when used: the CLI starts without a tool's HTTP client)
TOOLS = {
    "label_studio": "seals_al.labeltools.labelstudio.tool:LabelStudio",
    "terminal": "seals_al.labeltools.terminal:Terminal",
    "oracle": "seals_al.labeltools.oracle:Oracle",
}
# A URL set with no tool named means Label Studio (the one tool before label_tool existed).
URL_VARIABLES = ("LABEL_STUDIO_URL", ENV_URL)


def check_tool_name(name: str | None, where: str) -> None:
    """An error naming ``where`` when ``name`` is not a known tool."""
    if name is not None and name not in TOOLS:
        raise SealsError(
            f"{where}: label_tool {shown(name)} is not a known labeling tool; "
            f"known: {', '.join(sorted(TOOLS))}"
        )


def tool_name(campaign: Campaign) -> str | None:
    """The campaign's tool: its ``label_tool`` setting, else ``$LABEL_TOOL``, else Label Studio when
    a URL is set with no tool named (``$LABEL_STUDIO_URL``, how it was chosen before, or
    ``$LABEL_TOOL_URL``), else None: label files only."""
    name = campaign.config.label_tool or os.environ.get(ENV_TOOL, "").strip() or None
    if name is None and any(os.environ.get(v, "").strip() for v in URL_VARIABLES):
        name = "label_studio"
    check_tool_name(
        name, campaign.storage.where("campaign.json") if campaign.config.label_tool else f"${ENV_TOOL}"
    )
    return name


def tool_of(campaign: Campaign) -> LabelTool | None:
    """The campaign's labeling tool, bound to it; None when it uses label files only."""
    name = tool_name(campaign)
    if name is None:
        return None
    module, cls = TOOLS[name].split(":")
    return getattr(importlib.import_module(module), cls).of(campaign)
