"""Errors that say what was expected, what was found, and what to do about it."""
from __future__ import annotations


class FitoError(Exception):
    """Base class of every error fito raises on purpose."""


class CheckpointCorruptError(FitoError):
    """A unit or manifest of a committed epoch does not match what its decision promised."""

    def __init__(self, *, path: str, unit: str | None, expected: str, found: str, hint: str = "") -> None:
        self.path, self.unit, self.expected, self.found = path, unit, expected, found
        what = f"unit {unit!r} in {path}" if unit else path
        hint = hint or "restore with fallback=True (CLI: --fallback) to use the previous committed epoch"
        super().__init__(f"{what}: expected {expected}, found {found}; {hint}")


class UnsafeCheckpointError(CheckpointCorruptError):
    """Hostile or foreign content: paths escaping the root, unknown formats, malformed records."""


class NoCommittedEpochError(FitoError):
    """There is nothing to restore: no decision record says any epoch committed (or none is whole)."""


class SaveAbortedError(FitoError):
    """The attempt did not commit (a rank failed, timed out or the coordinator was fenced);
    the previous committed epoch is intact."""


class StaleFenceError(FitoError):
    """A coordinator whose fencing token is no longer current tried to publish a decision."""


class StateMismatchError(FitoError):
    """The checkpoint is whole but does not fit the objects it is restored into
    (different keys, shapes, dtypes or world size)."""
