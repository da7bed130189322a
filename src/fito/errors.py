"""Errors that say what was expected, what was found, and what to do about it."""
from __future__ import annotations

import errno


class FitoError(Exception):
    """Base class of every error fito raises on purpose."""


class CheckpointCorruptError(FitoError):
    """A unit or manifest of a committed epoch does not match what its decision promised."""

    def __init__(self, *, path: str, unit: str | None, expected: str, found: str, hint: str = "") -> None:
        self.path, self.unit, self.expected, self.found, self.hint = path, unit, expected, found, hint
        what = f"unit {unit!r} in {path}" if unit else path
        hint = hint or "restore(..., fallback=True) uses the previous committed epoch instead"
        super().__init__(f"{what}: expected {expected}, found {found}; {hint}")

    def __reduce__(self) -> tuple:
        # Keyword-only __init__: pickling (DCP sends every rank's exception to the others) needs the fields.
        return (_rebuild_corrupt, (type(self), self.path, self.unit, self.expected, self.found, self.hint))


def _rebuild_corrupt(cls: type, path: str, unit: str | None, expected: str, found: str, hint: str) -> CheckpointCorruptError:
    return cls(path=path, unit=unit, expected=expected, found=found, hint=hint)


class UnsafeCheckpointError(CheckpointCorruptError):
    """Hostile or foreign content: paths escaping the root, unknown formats, malformed records."""


class NoCommittedEpochError(FitoError):
    """There is nothing to restore: no decision record says any epoch committed (or none is whole)."""


class DecisionLogMissingError(FitoError):
    """The decision log of a checkpoint root is absent although the root holds attempts (it was deleted,
    renamed or not restored with them). fito never creates a fresh log there on its own: a fresh log would
    say "nothing committed" and the next save's retention would start from scratch."""


class DecisionLogDamagedError(UnsafeCheckpointError):
    """The decision log is not a fito log (not SQLite, another schema, malformed records, a symlink).
    It is refused, never repaired or reset: a reset fence would let an old coordinator commit again."""


class DecisionLogLockedError(FitoError):
    """Another process held the decision log's lock for longer than the timeout."""


class DecisionLogReadOnlyError(FitoError):
    """A write to the decision log was refused: the log, its directory or the mount is read-only
    (or the log was opened read-only on purpose)."""


class SaveAbortedError(FitoError):
    """The attempt did not commit (a rank failed, timed out or the coordinator was fenced);
    the previous committed epoch is intact.

    Besides the message, for code that handles it: `step` (the step that was being saved, if known),
    `phase` (where the first failure happened: "unit write", "persist", "manifest write", "publish", or
    None when no rank's storage or log failed, e.g. a lost peer) and `failures` ({rank: what failed there})."""

    def __init__(self, message: str, *, step: int | None = None, phase: str | None = None,
                 failures: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.step, self.phase, self.failures = step, phase, dict(failures or {})

    def __reduce__(self) -> tuple:
        # DCP pickles every rank's exception to the others: keep the fields
        return (_rebuild_aborted, (type(self), str(self), self.step, self.phase, self.failures))


def _rebuild_aborted(cls: type, message: str, step: int | None, phase: str | None,
                     failures: dict[int, str]) -> SaveAbortedError:
    return cls(message, step=step, phase=phase, failures=failures)


class PeerLostError(FitoError):
    """Another rank died or stopped answering inside one of fito's collectives (its process was killed, hung,
    or its host is unreachable). `lost`: the ranks that did not answer (empty if that could not be learned);
    `cause`: the process group's own words. A save raises SaveAbortedError instead (this is its cause)."""

    def __init__(self, message: str, *, lost: list[int] | None = None, cause: str = "") -> None:
        super().__init__(message)
        self.lost, self.cause = list(lost or []), cause

    def __reduce__(self) -> tuple:
        return (_rebuild_lost, (type(self), str(self), self.lost, self.cause))


def _rebuild_lost(cls: type, message: str, lost: list[int], cause: str) -> "PeerLostError":
    return cls(message, lost=lost, cause=cause)


class SaveInProgressError(FitoError):
    """A background save is still in flight and the caller asked not to wait for it."""


class StaleFenceError(FitoError):
    """A coordinator whose fencing token is no longer current tried to publish a decision."""


class GarbageCollectionError(FitoError):
    """Some attempts could not be deleted by retention (the others were); nothing committed and kept was
    touched. Raised by `fito gc`; after a save it is only logged, since the step committed."""


class RetireRefusedError(FitoError):
    """Retiring this decision would leave no newer committed step: the newest committed step is never
    retired (another collection or save changed the log since it was read; nothing was changed)."""


class StateMismatchError(FitoError):
    """The checkpoint is whole but does not fit the objects it is restored into
    (different keys, shapes, dtypes or world size)."""


class CoordinationUnavailableError(FitoError):
    """The coordination service (etcd quorum) did not acknowledge within the deadline. Treat the
    outcome as unknown, not as "no": a commit that timed out may still land, so re-send it with the same
    decision id (publishing is idempotent on it) before deciding anything else."""


class EpochConflictError(FitoError):
    """A fleet epoch transition was proposed from an epoch that is no longer current
    (another coordinator moved the fleet first)."""


class EpochFencedError(FitoError):
    """A node tried to act (join a collective, acknowledge) under an epoch that is not the committed one,
    or without a live lease: it has not observed the latest transition and is fenced out."""


class EpochMismatchError(FitoError):
    """The participants of one collective carried different protocol epochs; the collective was
    aborted on every rank before any payload was combined."""


class ValidationError(FitoError):
    """The restored model does not reproduce the validation loss recorded at save time (§9.3)."""


class RestoreFailedError(StateMismatchError):
    """A verified checkpoint could not be applied: an object's `load_state_dict` raised. Every entry the
    restore had touched was put back from its backup, so the caller's state is as it was before."""


class CheckpointUnreadableError(CheckpointCorruptError):
    """A file of a committed epoch exists but the OS refused to read it (permissions, an I/O error): its
    bytes may well be fine. A CheckpointCorruptError so that restore(..., fallback=True) moves on."""

    @classmethod
    def from_os(cls, path: str, exc: OSError) -> "CheckpointUnreadableError":
        name = errno.errorcode.get(exc.errno or 0, "OSError")
        return cls(path=path, unit=None, expected="a readable file", found=f"{exc.strerror or exc} ({name})",
                   hint="check the file's permissions, owner and the device; restore(..., fallback=True) uses the "
                        "previous committed epoch")


def same_kind(kind: str) -> type[FitoError]:
    """The class a rank raises when another rank refused a restore, given the lowest failing rank's class
    name: the same class where a summary of it can be built (the CheckpointCorruptError and StateMismatchError
    families), so every rank's `except` takes the same branch (a rank that went another way would wait alone
    in the next collective); CheckpointCorruptError otherwise."""
    cls = globals().get(kind)
    if isinstance(cls, type) and issubclass(cls, (CheckpointCorruptError, StateMismatchError)):
        return cls
    return CheckpointCorruptError


def refusal(kind: str, path: str, found: str, *, step: int | None = None) -> FitoError:
    """What a rank raises for a restore that some rank refused: class `same_kind(kind)`, naming `path` (and
    `step`) and every failed rank's reason (`found`); nothing was restored on any rank."""
    cls = same_kind(kind)
    if issubclass(cls, StateMismatchError):
        return cls(f"{path}{'' if step is None else f' (step {step})'}: {found}; nothing was restored on any rank")
    return cls(path=path, unit=None, expected="every rank's bytes whole and fitting the target",  # type: ignore[call-arg]
               found=found, hint="nothing was restored on any rank")
