"""Named crash points for testing crash safety.

With SEALS_FAILPOINT=<name> in the environment the process exits at once when it reaches that
point (no cleanup, like a kill); with SEALS_FAILPOINT=<name>:sleep it sleeps there instead (up to
a minute), so a test can hold a round open and start a second one beside it.
"""

from __future__ import annotations

import os
import time

EXIT_CODE = 137  # what a SIGKILL'd process reports
SLEEP_SECONDS = 60


def failpoint(name: str) -> None:
    setting = os.environ.get("SEALS_FAILPOINT", "")
    if setting == name:
        os._exit(EXIT_CODE)
    if setting == f"{name}:sleep":
        time.sleep(SLEEP_SECONDS)
