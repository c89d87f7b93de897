"""The one exception type users see: a short message naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class AutomedsegError(Exception):
    """A problem with the user's input, weights or options (not a bug).

    The CLI prints ``str(error)`` on one line and exits with status 2.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputError(AutomedsegError):
    """An input file or folder that cannot be read or makes no sense."""


class PromptError(AutomedsegError):
    """A box prompt that does not fit the image."""


class WeightsError(AutomedsegError):
    """Model weights that are missing, corrupted or of the wrong shape."""


class AutomedsegWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints
    ``automedseg: warning: <message>`` on stderr."""
