"""`fito.dcp.save`: `torch.distributed.checkpoint.save` with its failures said as fito's errors, on every rank.

Why a wrapper: DCP runs its own collectives (`_DistWrapper`: the gather and scatter of the plans, the gather
of the write results, the broadcast of the outcome) and catches every exception of a StorageWriter to send it
through the next one of them. When a rank dies, that next collective fails on the survivors with gloo's
RuntimeError (DistBackendError: "Connection closed by peer [addr]:port"), raised by dcp.save itself: no
StorageWriter or planner method runs after it, so fito.dcp.Writer cannot turn it into anything else. Plain
`dcp.save(..., storage_writer=fito.dcp.Writer(...))` therefore gives a survivor that RuntimeError (the
checkpoint stays safe: nothing commits without every READY). `fito.dcp.save` gives SaveAbortedError naming
the lost rank, as fito.Checkpointer does (it uses the same functions below). Both also hand what DCP reported
to the coordinator (`tell_coordinator`): a failed rank as RankFailed, a silent one as TimedOut, so the
abort is the Coordinator machine's, published through the decision store, and its Discard runs."""
from __future__ import annotations

from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata

from fito.commit.transport import ProcessGroupTransport
from fito.errors import FitoError, PeerLostError, SaveAbortedError, StateMismatchError
from fito.plan.save import SavePlanner
from fito.protocol.messages import RankFailed, TimedOut


def save(state_dict: dict[str, Any], *, storage_writer: Any, planner: Any = None, process_group: Any = None) -> Metadata:
    """`dcp.save(state_dict, storage_writer=fito.dcp.Writer(root, step), planner=fito.dcp.SavePlanner())`, but a
    failure on any rank is a FitoError on every surviving rank: SaveAbortedError (naming the failed or lost
    ranks in `failures`) or StateMismatchError (the state was refused). `planner` defaults to fito's."""
    step = getattr(storage_writer, "step", None)
    try:
        return dcp.save(state_dict, storage_writer=storage_writer, planner=planner if planner is not None else SavePlanner(),
                        process_group=process_group)
    except CheckpointException as exc:
        tell_coordinator(storage_writer, exc)
        raise save_error(step, exc) from None
    except FitoError:
        raise
    except Exception as exc:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(process_group) == 1:
            tell_coordinator(storage_writer, exc)
            raise
        lost = ProcessGroupTransport(process_group).lost_peer(exc, f"DCP's collectives of the save of step {step}")
        tell_coordinator(storage_writer, lost)
        raise peer_lost(step, lost, "") from exc


def tell_coordinator(writer: Any, exc: BaseException) -> None:
    """On the coordinator (a fito.dcp.Writer that began an attempt): what DCP reported, as the machine's
    event. A rank's failure (CheckpointException) is RankFailed of the lowest failed rank; a lost or silent
    peer (PeerLostError) is TimedOut: the coordinator stopped waiting; anything else failed on this rank."""
    fail = getattr(writer, "fail", None)
    if fail is None or not getattr(writer, "is_coordinator", False):
        return
    if isinstance(exc, CheckpointException):
        rank, pair = min(exc.failures.items(), key=lambda kv: kv[0])
        cause = pair[0] if isinstance(pair, tuple) else pair
        fail(RankFailed(rank, f"{type(cause).__name__}: {cause}"))
    elif isinstance(exc, PeerLostError):
        fail(TimedOut(f"no answer from rank(s) {sorted(exc.lost) or '?'}: {exc.cause}"))
    else:
        fail(RankFailed(getattr(writer, "rank", 0), f"{type(exc).__name__}: {exc}"))


def peer_lost(step: int | None, exc: PeerLostError, when: str) -> SaveAbortedError:
    """A save's SaveAbortedError for a lost peer, on every survivor: it names the lost rank(s) in the message
    and in `failures` (phase None: no storage or log failed)."""
    failures = {r: f"lost: {exc.cause}" for r in exc.lost}  # empty when which rank could not be learned
    return SaveAbortedError(f"save of step {step} aborted{' ' + when if when else ''}: {exc}; nothing was committed, "
                            "the previous committed epoch is intact — restart the job (every rank) and restore",
                            step=step, failures=failures)


def save_error(step: int | None, exc: CheckpointException) -> FitoError:
    """One FitoError for what DCP reports on every rank: a refusal of the state, or an aborted attempt."""
    causes = {r: (pair[0] if isinstance(pair, tuple) else pair) for r, pair in exc.failures.items()}
    said = "; ".join(f"rank {r}: {e}" if isinstance(e, SaveAbortedError) else f"rank {r}: {type(e).__name__}: {e}"
                     for r, e in sorted(causes.items()))[:3000]
    if any(isinstance(e, StateMismatchError) for e in causes.values()):
        return StateMismatchError(f"save of step {step} refused, nothing was committed: {said}")
    failures = {r: (str(e) if isinstance(e, SaveAbortedError) else f"{type(e).__name__}: {e}") for r, e in sorted(causes.items())}
    phase = next((e.phase for _, e in sorted(causes.items()) if isinstance(e, SaveAbortedError) and e.phase), None)
    return SaveAbortedError(f"save of step {step} aborted: {said}; nothing was committed, the previous committed "
                            "epoch is intact", step=step, phase=phase, failures=failures)
