"""The project's error hierarchy: exception types only (the CLIs turn them into exit codes in runtime/cli/process.py).

Every message says what was expected, what was received, and what is available.
"""
from __future__ import annotations

import re

# How a message names one of the caller's parameters: `out`, or `force=True` for a switch. Python
# callers read the parameter; the CLIs show its flag instead (--out, --force: runtime.cli.process.as_flags),
# so library code never names a flag. Only parameters are written this way in messages.
PARAMETER = re.compile(r"`([a-z][a-z0-9_]*)(?:=True)?`")


class FeatureMapsError(Exception):
    """Base class: an expected failure caused by the user's input or environment."""


class ArtifactError(FeatureMapsError):
    """Artifacts missing, corrupt, tampered with, or of an unknown schema version."""


class InputError(FeatureMapsError, ValueError):
    """Images of the wrong shape, dtype or value range, NaN/inf, or an unknown output name."""


class BackendError(FeatureMapsError):
    """A backend that is unknown or not installed."""


class DeviceError(BackendError):
    """A device that was asked for but is not usable here."""


class DataError(FeatureMapsError):
    """A data set or image file that cannot be found or read."""


class ExportError(FeatureMapsError):
    """A model that cannot be exported, or artifacts that failed verification."""


class UsageError(FeatureMapsError):
    """Bad command-line arguments, reported like every other project error."""


class TargetChanged(FeatureMapsError):
    """Another program changed a folder while it was being replaced (runtime.artifacts.atomic.replace_dir).

    Writers catch it and raise their own error class. Attributes: path, the folder that was to be written;
    appeared, whether something new took that place meanwhile (left as it is); kept, where the previous
    folder is when it could not be put back (None when it is back at path, or was never moved).
    """

    def __init__(self, message: str, path, appeared: bool = False, kept=None):
        super().__init__(message)
        self.path, self.appeared, self.kept = path, appeared, kept


class FeatureMapsWarning(UserWarning):
    """Base class: something that is likely wrong but does not stop the work (CLIs print one line)."""


class Interrupted(KeyboardInterrupt):
    """KeyboardInterrupt that knows its signal (exit status 128 + signum, as a shell reports it)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {int(signum)}")
        self.signum = int(signum)
