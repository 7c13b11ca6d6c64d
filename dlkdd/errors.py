"""Exceptions users see as one-line messages (the CLI prints them without a traceback).

Every message names the file (and line, key or field) at fault and, where there is one, the fix.
"""
from __future__ import annotations


class DlkddError(Exception):
    """Base class of expected, user-facing errors."""


class DataError(DlkddError):
    """A manifest, list file or mapping is missing or malformed."""


class VideoError(DataError):
    """A video is missing, unreadable, has no video stream or is truncated."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class CacheError(DlkddError):
    """A logit cache is missing, incomplete, locked, corrupt or does not match the data."""


class CheckpointError(DlkddError):
    """A checkpoint is missing, truncated, of another architecture or a newer schema."""


class TrainingError(DlkddError):
    """Training cannot go on (e.g. a non-finite loss)."""


class OutputError(DlkddError):
    """An output location cannot be written, is an input, or is held by another run."""


class ResourceError(DlkddError):
    """The settings ask for more than this machine has (memory), or a device it lacks."""


class ClipTooLongError(DlkddError, ValueError):
    """A clip has more frames than the model's temporal head takes (a ValueError too, for callers of the module)."""
