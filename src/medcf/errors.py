"""User-facing error types.

Every error a user can cause (bad path, wrong shape, corrupt file, checkpoint of
the wrong kind) is a ``MedcfError`` whose message is one line naming what and
where. The CLI prints that line and exits with code 2; library users catch it.
"""

from __future__ import annotations


class MedcfError(Exception):
    """A user error: the message is one line that names the file or argument."""


class DataError(MedcfError):
    """Unreadable, missing or inconsistent input data."""


class CheckpointError(MedcfError):
    """A checkpoint that is missing, corrupt, or of the wrong kind."""


class ShapeError(MedcfError):
    """An input of the wrong resolution, channel count or rank."""


class NotFittedError(MedcfError):
    """An explainer or model used before its ``fit`` step."""


class WeightsNotFoundError(MedcfError):
    """Pretrained weights that must come from a local file or cache are absent."""


class UnsafeFileError(CheckpointError):
    """A file refused by a safety check: a disallowed pickle global, a structure over
    its size/depth budget, a special file (FIFO, device) or an oversized archive member."""


class OutputError(MedcfError):
    """An output path that would overwrite, collide with or escape through existing files."""
