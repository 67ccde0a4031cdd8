"""User-facing errors: the CLI prints them on one line and exits with code 2."""


class SealsError(Exception):
    """Bad input or state that the user can fix (a missing column, an unknown id, a wrong dimension)."""


class PoolExhaustedError(SealsError):
    """Nothing is left to select: the candidate pool (or U minus L in global mode) is empty."""
