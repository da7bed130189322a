"""`Checkpointer`: runs the commit protocol's machines over real storage, a real decision store and the
ranks' process group; restores strictly (every byte verified before any caller object is touched)."""
from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Callable, Mapping, MutableMapping, NoReturn

import torch

from fito.ckpt.handle import SaveHandle
from fito.ckpt.per_rank_read import load_manifest, load_shard
from fito.ckpt.progress import ByteProgress
from fito.ckpt.staging import StagingBuffer
from fito.ckpt.apply import Applied, RestorePlan
from fito.commit.transport import Transport, default_transport
from fito.commit import decision
from fito.commit.attempt import Fence, FencePolicy
from fito.coord.base import Decision, DecisionStore
from fito.coord.choose import default_store
from fito.errors import (
    FitoError, SaveAbortedError, SaveInProgressError, RestoreFailedError, StateMismatchError,
    UnsafeCheckpointError, ValidationError,
)
from fito.format.hashing import ALGORITHMS, DEFAULT_ALGORITHM
from fito.storage.base import Storage
from fito.storage import open_storage

log = logging.getLogger("fito")
VALIDATION_ENTRY = "__validation__"


class Checkpointer:
    """Save and restore a training state under `root` (a directory, or a `fito.storage.Storage` object).

    Under torch.distributed every rank creates a Checkpointer on the same root (a shared file system) and
    calls `save`/`restore` together; each rank writes and reads only its own units, rank 0 coordinates.
    `keep`: after each commit, keep only the newest `keep` committed epochs (None keeps all); committed steps
    above the one just saved are kept and not counted, unless that save said `rollback=True` (see `save`).
    `store`: where decisions live (default: SQLite file in `root`; see fito.coord for etcd). It is never
    created next to existing attempts: a root whose log is missing raises DecisionLogMissingError (see
    `fito recover-log`).
    The first save on rank 0 makes this Checkpointer the coordinator of `root`: before it writes anything it
    takes a new fencing token, so any older coordinator (a zombie of a previous run) can no longer commit or
    delete. Restoring, listing and inspecting take no token and need no write access (an evaluator can
    restore beside a training job, or from a read-only mount).
    `validator`: a function returning the loss on a fixed held-out batch (§9.3 of the paper). It is recorded
    at every save and recomputed after restore; a difference beyond the tolerances fails the epoch (and with
    fallback=True moves to the previous one). It must not change the model; the torch RNG is preserved."""

    def __init__(
        self, root: str | os.PathLike[str] | Storage, *, keep: int | None = None, hash: str = DEFAULT_ALGORITHM,
        process_group: Any = None, progress: bool | None = None, store: DecisionStore | None = None,
        validator: Callable[[], float] | None = None, validate_rtol: float = 1e-5, validate_atol: float = 1e-8,
    ) -> None:
        if keep is not None and keep < 1:
            raise ValueError(f"keep={keep}: at least the newest committed epoch is always kept; use keep >= 1 or None")
        if hash not in ALGORITHMS:
            raise ValueError(f"hash={hash!r}: choose one of {sorted(ALGORITHMS)}")
        self.storage: Storage = open_storage(root)
        self.root: str = self.storage.url  # the checkpoint's identity: a path, or s3://bucket/prefix
        self.keep = keep
        self.algorithm = hash
        self.transport: Transport = default_transport(process_group)
        self.rank, self.world_size = self.transport.rank, self.transport.world_size
        self.progress = progress
        self.validator, self.validate_rtol, self.validate_atol = validator, validate_rtol, validate_atol
        # The default log is only looked at here (no connection): a lost log is refused on every rank alike.
        self._store = store if store is not None else self._default_store()
        # rank 0 takes the token at its first save and holds it for life (fito.commit.attempt)
        self._fence = Fence(FencePolicy.PER_LIFE)
        self._fence_error: Exception | None = None
        self._staging = StagingBuffer()
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: SaveHandle | None = None
        from fito.ckpt.partial import IncompatibleKeys  # here: fito.ckpt.partial imports the save path, which imports this
        self.left_out = IncompatibleKeys([], [])  # what the last restore(strict=False) left out

    # ---------------------------------------------------------------- decisions
    @property
    def store(self) -> DecisionStore:
        if self._store is None:
            self._store = self._default_store()
        return self._store

    def _default_store(self) -> DecisionStore:
        return default_store(self.storage)  # SQLite in a local root, the storage-native store on S3

    # take_fence, refuse_start, fence, stage, settle_previous, coordinator_fence, apply_voted, validation_loss,
    # validate, candidates, load_per_rank, progress_bar: steps of the save and restore paths (fito.ckpt.
    # sharded_save, sharded_restore, fito.testing.v1_format) on this Checkpointer's own state. No leading
    # underscore so those modules call them instead of reaching into its privates (tests/
    # test_checkpointer_owns.py); not the documented API (the class docstring and save/restore/close are).
    def take_fence(self) -> str:
        """Rank 0, at the start of a save: hold a fencing token before the first write of the first save (not
        lazily at the first publish: the model checker found that a zombie could then delete live work).
        Returns the attempt name, or "!reason" when the store refused (raise it with `refuse_start`)."""
        try:
            return self._fence.new_attempt(self.store)
        except Exception as exc:  # noqa: BLE001 - told to every rank by the caller, so none waits for an attempt that never starts
            self._fence_error = exc
            return f"!{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else f"!{exc}"

    def refuse_start(self, step: int, reason: str) -> NoReturn:
        """Raise the refusal of a save whose coordinator could not take the fencing token (`reason`: what
        `take_fence` returned after its "!"); on rank 0 its cause is the store's own error."""
        cause, self._fence_error = self._fence_error, None
        raise SaveAbortedError(f"save of step {step} not started: the coordinator could not take the fencing "
                               f"token: {reason}", step=step, failures={0: reason}) from cause

    @property
    def fence(self) -> Fence:
        """The fencing token this Checkpointer holds for life (fito.commit.attempt), for its saves' Writer."""
        return self._fence

    def stage(self, items: list[tuple[str, memoryview | torch.Tensor]]) -> list[tuple[str, memoryview]]:
        """Copy `items` into this Checkpointer's one reused host buffer (fito.ckpt.staging)."""
        return self._staging.stage(items)

    def committed(self) -> list[int]:
        """Steps that a durable decision says committed (and not retired), oldest commit first."""
        return [d.epoch for d in self.store.committed()]

    def close(self) -> None:
        """Wait for a save in flight (raising its error), then release the decision log and the process group
        this Checkpointer created (on every rank, after its last save or restore; see fito.commit.transport)."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None
            self._close_store()
            self.transport.close()  # destroys the group fito created (its gloo threads are joined before exit)

    def _close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- save
    def save(self, step: int, state: Mapping[str, Any], *, blocking: bool = True,
             if_busy: str = "wait", rollback: bool = False) -> int | SaveHandle:
        """Persist `state` as epoch `step` and commit it.

        blocking=True: returns `step` once the decision is durable; raises SaveAbortedError if the attempt
        aborted (the previous committed epoch is then intact).
        blocking=False: copies the state to host memory (the only stall), then persists and commits in the
        background and returns a SaveHandle. The agreement between ranks (same entries on every rank, which
        values are rank-local) is reached in the background too, on the copy: a state the ranks disagree on
        fails the save there, and wait() or the next save() raises it (a rank whose state cannot be captured
        raises at once, and its peers' saves fail). At most one save is in flight: a new call waits for the previous
        one (if_busy="wait") or raises SaveInProgressError (if_busy="error"). A background failure nobody
        has looked at is raised by the next save() or wait().

        Saving a step that is already committed (a job restarted from an older step re-runs it) replaces it:
        the new attempt commits first, then the older decision of that step is retired in the log and only
        then are its files deleted, so at every moment one whole copy of the step is restorable.
        After the commit, retention runs (see `keep`); if it fails, the save still succeeds (the step is
        committed) and a warning is logged on the "fito" logger.

        A save below the newest committed step (step 10 while 200 and 300 are committed) never makes
        retention delete the higher steps: they are kept whatever `keep` says, and a warning asks whether the
        job restarted without restoring. `rollback=True` says the run is rolled back on purpose: retention
        then deletes the committed steps above `step` first (with `keep`; keep=None deletes nothing). Either
        way restore() then returns `step`, the newest by commit order (restore(step=300) the kept one)."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if if_busy not in ("wait", "error"):
            raise ValueError(f"if_busy must be 'wait' or 'error', got {if_busy!r}")
        self.settle_previous(if_busy)
        from fito.ckpt import sharded_save  # sharded state (fito-manifest/2): any world size restores it
        commit = sharded_save.prepare(self, step, state, stage=not blocking, rollback=rollback)
        if blocking:
            return commit()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="fito-save")
        self._inflight = SaveHandle(step, self._executor.submit(commit))
        return self._inflight

    def wait(self) -> int | None:
        """Wait for the save in flight, if any; return its step or raise its error."""
        handle, self._inflight = self._inflight, None
        return handle.wait() if handle else None

    def settle_previous(self, if_busy: str) -> None:
        handle = self._inflight
        if handle is None:
            return
        if not handle.done() and if_busy == "error":
            raise SaveInProgressError(f"the save of step {handle.step} is still in flight; wait() for it or use if_busy='wait'")
        self._inflight = None
        error = handle.outcome()
        if error is not None and not handle.observed:
            raise SaveAbortedError(f"the background save of step {handle.step} failed: {error}", step=handle.step,
                                   phase=getattr(error, "phase", None), failures=getattr(error, "failures", None)) from error

    def coordinator_fence(self) -> int:
        return self._fence.held()

    # ---------------------------------------------------------------- restore
    def restore(self, state: MutableMapping[str, Any], step: int | None = None, *, fallback: bool = False,
                rank_local: Any = "error", strict: bool = True) -> int:
        """Load the newest committed epoch (or `step`) into `state`, in place, and return its step.

        Any world size or mesh restores a checkpoint saved on any other (FSDP2, TP, DDP, plain: DCP plans the
        resharding reads); steps written in the per-rank format (fito-manifest/1) restore on the world size
        that wrote them. Strict: every entry of `state` must be in the checkpoint and every saved entry in
        `state` (`strict=False`: entries and module keys only one side has are left out, the rest restored as
        strictly, and what was left out is in `self.left_out`, an IncompatibleKeys(missing_keys,
        unexpected_keys), and logged; see fito.ckpt.partial). Every byte this rank uses is checked (manifest hash
        from the decision, object headers, block hashes, shapes and dtypes against `state`) and every rank votes
        before anything is copied; on any mismatch the caller's objects are untouched on every rank. `rank_local`: what rank-local entries
        (RNGState, DataPosition, values that differed between ranks) do on another world size: "error"
        (default), "reset" (keep the current values), {new_rank: saved_rank}, or {entry: one of those}; see
        fito.ckpt.rank_local. With `fallback=True`, a damaged epoch is skipped for the previous committed one
        (all ranks move together). With a `validator`, the restored model must also reproduce the loss
        recorded at save time, or the epoch counts as damaged. If an object's load_state_dict still raises,
        every entry is put back (RestoreFailedError, on every rank): until it returns, a restore keeps what
        it needs for that (old storages and state objects, or a host copy where nothing cheaper is exact;
        see fito.ckpt.apply)."""
        from fito.ckpt import sharded_restore
        step, self.left_out = sharded_restore.restore(self, state, step, fallback=fallback, rank_local=rank_local,
                                                      strict=strict)
        return step

    def apply_voted(self, plan: RestorePlan, applied: list[Applied], d: Decision) -> FitoError | None:
        """Apply `plan` on this rank, then vote: unless every rank applied its plan, every rank puts its state
        back, so a failed restore leaves nothing changed on any rank."""
        error: FitoError | None = None
        try:
            applied.append(plan.apply())
        except FitoError as exc:  # this rank's state is already back as it was
            error = exc
        if self.transport.all_ok(error is None):
            return None
        if error is None:
            applied.pop().rollback()
            error = RestoreFailedError(f"{d.manifest} (step {d.epoch}): another rank failed to load its state (see "
                                       "its error); this rank's state was put back, nothing changed")
        return error

    def validation_loss(self) -> float:
        assert self.validator is not None
        with torch.random.fork_rng(devices=[]):  # the check must not shift the training's random stream
            return float(self.validator())

    def validate(self, d: Decision, recorded: Any) -> Exception | None:
        if recorded is None:
            return None  # saved without a validator: nothing to compare against
        data = recorded.get("data") if isinstance(recorded, dict) else None
        if not isinstance(data, (int, float)) or isinstance(data, bool):
            return UnsafeCheckpointError(path=d.manifest, unit=VALIDATION_ENTRY, expected="a recorded loss", found=repr(data)[:80])
        recorded = float(data)
        found = self.validation_loss()
        if abs(found - recorded) <= self.validate_atol + self.validate_rtol * abs(recorded):
            return None
        return ValidationError(
            f"step {d.epoch}: validation loss {found!r} after restore, {recorded!r} recorded at save "
            f"(rtol {self.validate_rtol}, atol {self.validate_atol}); the restored model does not reproduce the "
            "saved one. restore(..., fallback=True) moves to the previous committed epoch. This check sees the "
            "weights only: optimizer moments, step counters, RNG and data position are covered by the hashes and "
            "epoch tags, not by it."
        )

    def candidates(self, step: int | None) -> list[Decision]:
        """The decisions this restore may try, newest last, the same on every rank (fito.commit.decision)."""
        return decision.agree(self.transport, self.root,
                              lambda: decision.candidates(decision.read_committed(self.root, self.store), step, self.root))

    def load_per_rank(self, d: Decision) -> dict[str, Any]:
        m = load_manifest(self.storage, d)
        if m.world_size != self.world_size:
            raise StateMismatchError(f"{d.manifest}: saved by {m.world_size} ranks, restoring on {self.world_size}")
        shard = m.shard(self.rank)
        with self.progress_bar(f"restore step {d.epoch}", shard.size) as advance:
            return load_shard(self.storage, m, shard, progress=advance)

    # ---------------------------------------------------------------- helpers
    def progress_bar(self, label: str, total: int) -> Any:
        show = self.progress if self.progress is not None else (self.rank == 0 and total >= 256 << 20 and sys.stderr.isatty())
        return ByteProgress(label, total) if show else nullcontext(None)

