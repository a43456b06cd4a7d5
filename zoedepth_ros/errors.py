"""Errors that end an executable with one line on stderr and exit status 1 (no traceback)."""


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing checkpoint); the message says what to do."""


class WeightsError(RuntimeError):
    """A checkpoint could not be found, downloaded or verified; the message says what to do next."""
