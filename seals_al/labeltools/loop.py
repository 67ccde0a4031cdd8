"""The tool around a round, whichever it is: push after a batch opens, wait (or poll) until
enough is answered and pull, pull again before an ingest."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from seals_al.labeltools.base import LabelTool, LabelToolError, LabelToolUnreachable, Pushed, check_fraction
from seals_al.labeltools.registry import tool_of

if TYPE_CHECKING:
    from seals_al.campaign import Campaign


def watcher(tool: LabelTool, fraction: float) -> Callable[[], str]:
    """For :meth:`Campaign.wait_for_labels`: each call pushes the open batch if that has not been
    done yet, looks at how far people are and, once ``fraction`` of the batch is answered, pulls;
    it returns a line saying how far along. A tool that does not answer (restarting, say) is
    reported and asked again at the next poll, until the wait's timeout."""
    pushed = False

    def look() -> str:
        nonlocal pushed
        try:
            if not pushed:
                print(tool.push().summary(), flush=True)
                pushed = True
            progress = tool.progress()
            line = progress.line(tool.title)
            if progress.reached(fraction):
                line += f"; pulled: {tool.pull().summary()}"
            return line
        except LabelToolUnreachable as e:
            return f"{e}; asking again at the next poll"

    return look


def wait_for_labels(
    campaign: Campaign, poll_seconds: float, timeout_seconds: float, fraction: float = 1.0
) -> list[str]:
    """Wait for labels: with a tool configured, push the open batch (if it is not there yet), then
    poll until ``fraction`` of it is answered and pull; a label file dropped into the inbox ends
    the wait too. Returns the new label files' keys."""
    check_fraction(fraction)
    tool = tool_of(campaign)
    if tool is None:
        return campaign.wait_for_labels(poll_seconds, timeout_seconds)
    return campaign.wait_for_labels(poll_seconds, timeout_seconds, watch=watcher(tool, fraction))


def push_if_configured(campaign: Campaign) -> Pushed | None:
    """Push the open batch when a tool is configured and a batch is out."""
    tool = tool_of(campaign)
    if tool is None or campaign.state().round < 0:
        return None
    return tool.push()


def sync_before_ingest(campaign: Campaign) -> list[str]:
    """What an ingest does first when a tool is configured: push the open batch's missing items (a
    campaign that had none, or a push that failed, is caught up by the next run) and pull the
    answers into the inbox. Returns what each did, one line each."""
    tool = tool_of(campaign)
    if tool is None or campaign.state().round < 0:
        return []
    lines = []
    for action, step in (("push", tool.push), ("pull", tool.pull)):
        try:
            lines.append(step().summary())
        except LabelToolError as e:  # never blocks the label files already in the inbox
            lines.append(
                f"{tool.title} {action} failed: {e}; the label files in the inbox are ingested all "
                f"the same (run `seals-al label-tool {action}` again later)"
            )
            break
    return lines
