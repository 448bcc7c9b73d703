"""Errors raised for bad user input. The CLI prints them as one line (no traceback without --debug)."""

from __future__ import annotations

# Exit codes of ``python -m study``: success, bad input or a failed command, usage error (argparse), Ctrl-C.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class StudyError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class ConfigError(StudyError):
    """A run setting (CLI flag, config file, storage URL, study name) is invalid."""


class SearchSpaceError(StudyError):
    """A search-space YAML file is malformed or names something unknown."""


class DataError(StudyError):
    """A data source is missing, malformed or empty."""


class NonFiniteLossError(StudyError):
    """Training diverged: the loss became NaN or infinite.

    Attributes:
        epoch: the 1-based epoch in which the non-finite loss was seen.
    """

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training diverged: loss={loss} at epoch {epoch}; try a lower learning rate")
        self.epoch = epoch
        self.loss = loss
