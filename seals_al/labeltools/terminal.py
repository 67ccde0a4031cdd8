"""The terminal labeler (``label_tool: terminal``, and ``seals-al label``): shows each pending
example of the open batch and records a person's answer (y / n / skip / undo / quit) into the
round's inbox, saving after every answer. End of input and Ctrl-C quit like q. If a round commits
while it runs, the answers it goes on saving in that (now older) inbox are taken in by the next
round."""

from __future__ import annotations

import json
from collections.abc import Callable

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from seals_al.campaign import Campaign
from seals_al.campaign.layout import terminal_labels
from seals_al.errors import SealsError
from seals_al.labeltools.base import BoundTool, Note, Progress, open_state
from seals_al.storage.base import Storage


def run_labeler(campaign: Campaign, console: Console, ask: Callable[[str], str] | None = None) -> dict:
    """Label the open batch interactively.

    Args:
        campaign: the campaign.
        console: where examples are shown.
        ask: reads one answer (default: a line from the terminal).

    Returns:
        Counts: answered (in the inbox file), skipped and pending.
    """
    state = open_state(campaign)
    key = terminal_labels(state.round)
    storage = campaign.storage
    answers = _saved_answers(storage, key)
    queue = [row for row in state.pending if row["id"] not in answers]
    ask = ask or (lambda prompt: console.input(Text(prompt)))
    history: list[str] = []
    skipped: set[str] = set()
    concept = campaign.config.concept

    def save() -> None:
        storage.write_text(key, "".join(json.dumps({"id": i, "label": v}) + "\n" for i, v in answers.items()))

    at = 0
    while at < len(queue):
        row = queue[at]
        console.print(_panel(row, at, len(queue)))
        try:
            choice = ask(f"Is this {concept!r}? y=yes n=no s=skip u=undo q=quit: ").strip().lower()[:1]
        except (EOFError, KeyboardInterrupt):  # end of input or Ctrl-C: quit; every answer is saved
            console.print()
            break
        if choice in ("y", "n"):
            answers[row["id"]] = 1 if choice == "y" else 0
            save()
            history.append(row["id"])
            skipped.discard(row["id"])
            at += 1
        elif choice == "s":
            skipped.add(row["id"])
            at += 1
        elif choice == "u":
            if not history:
                console.print("nothing to undo")
                continue
            last = history.pop()
            del answers[last]
            save()
            at = next(i for i, r in enumerate(queue) if r["id"] == last)
        elif choice == "q":
            break
        else:
            console.print("answer y, n, s, u or q")
    pending = len([r for r in state.pending if r["id"] not in answers])
    console.print(
        f"{len(answers)} answer(s) saved in {storage.where(key)}; {pending} still pending. "
        "Run `seals-al round` to ingest them."
    )
    return {"answered": len(answers), "skipped": len(skipped), "pending": pending}


def _saved_answers(storage: Storage, key: str) -> dict[str, int]:
    """The answers an earlier session saved (id -> label), so a labeler resumes where it stopped."""
    if not storage.exists(key):
        return {}
    answers = {}
    for number, line in enumerate(storage.read_text(key).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("id"), str) and row.get("label") in (0, 1)):
            raise SealsError(
                f"{storage.where(key)}: line {number}: not a saved answer (expected "
                '{"id": "...", "label": 0 or 1}); fix or remove that line, then label again'
            )
        answers[row["id"]] = int(row["label"])
    return answers


def _panel(row: dict, at: int, total: int) -> Panel:
    return Panel(
        row.get("text") or "(no text)",
        title=f"{at + 1} of {total} · {row['id']} · round {row['round']}",
        subtitle=f"{row['strategy']} score {row['score']:.3f}",
    )


class Terminal(BoundTool):
    """A person answers in a terminal (``seals-al label CAMPAIGN``), saved into the inbox as they go."""

    name = "terminal"
    title = "the terminal"

    def push(self) -> Note:
        batch = len(open_state(self.campaign).batch)
        command = f"seals-al label {self.campaign.storage.uri}"
        return Note(f"terminal: label the open batch ({batch} item(s)) with `{command}`", command, batch)

    def pull(self) -> Note:
        key = terminal_labels(open_state(self.campaign).round)
        saved = len(_saved_answers(self.campaign.storage, key))
        return Note(f"terminal: {saved} answer(s) saved in {self.campaign.storage.where(key)} as given")

    def progress(self) -> Progress:
        state = open_state(self.campaign)
        pending = {row["id"] for row in state.pending}
        saved = _saved_answers(self.campaign.storage, terminal_labels(state.round))
        return Progress(len(pending & saved.keys()), len(pending))
