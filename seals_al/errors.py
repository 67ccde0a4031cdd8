"""User-facing errors: the CLI prints them on one line and exits with code 2."""

EXIT_USAGE = 2  # what a command exits with on a SealsError (bad input or state)


class SealsError(Exception):
    """Bad input or state that the user can fix (a missing column, an unknown id, a wrong dimension)."""


class PoolExhaustedError(SealsError):
    """Nothing is left to select: the candidate pool (or U minus L in global mode) is empty."""


def cut(text: str, limit: int) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and "..." in ``limit``."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for messages that echo user input."""
    if isinstance(value, str) and len(value) > limit - 2:  # keep the quotes: 'abc...'
        return repr(value[: limit - 5] + "...")
    return cut(repr(value), limit)
