"""Events (inputs) and commands (outputs) of the commit protocol. Plain frozen dataclasses: hashable,
so the model checker can fingerprint states that contain them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from fito.protocol.coverage import Key
from fito.protocol.layout import attempt_dir, manifest_path, object_path

Outcome = Literal["commit", "abort"]
NO_FENCE = 0  # fencing tokens are >= 1; a machine that holds none (a participant) carries 0


@dataclass(frozen=True)
class UnitEntry:
    """What a participant vouches for after persist: one unit (item) of its object.

    A unit is vouched for by one hash over its bytes (`hash`, the per-rank v1 format) or by the hash of each
    block of its payload (`blocks`, the sharded format, so a resharding reader verifies exactly the bytes it
    reads). `chunk` is the offsets of a tensor chunk: the coverage key is (name, chunk)."""

    name: str
    offset: int
    length: int
    hash: str  # "algo:hex" over the unit's bytes (header + payload); "" when `blocks` vouch for them
    epoch: int  # the epoch tag embedded in the unit's header
    blocks: tuple[str, ...] = ()  # hex digest of each block of the payload, in order
    chunk: tuple[int, ...] | None = None  # offsets of a tensor chunk in its global tensor; None: a whole item

    @property
    def key(self) -> Key:
        return (self.name, self.chunk)


@dataclass(frozen=True)
class Ready:
    """READY(e, attempt, rank, file, size, units): sent only after the file is persisted (bytes and name durable)."""

    epoch: int
    attempt: str
    rank: int
    file: str  # relative to the checkpoint root
    size: int
    units: tuple[UnitEntry, ...]


# ---- commands (machine -> driver) ----
@dataclass(frozen=True)
class WriteShard:
    rank: int
    epoch: int
    attempt: str
    path: str  # relative to the checkpoint root, unique per (epoch, attempt, rank)


@dataclass(frozen=True)
class Persist:
    """Make the object `path` durable under its name: once `Persisted(path)` comes back, a crash keeps both
    its bytes and the name that finds it. How is the storage's business (a POSIX disk fsyncs the file and
    its directory; an object store's completed upload already is durable), never the protocol's."""

    path: str


@dataclass(frozen=True)
class SendReady:
    ready: Ready


@dataclass(frozen=True)
class WriteManifest:
    path: str
    epoch: int
    attempt: str
    readies: tuple[Ready, ...]  # sorted by rank


@dataclass(frozen=True)
class PublishDecision:
    """The commit point (for outcome "commit"): a durable, atomic write of the decision record, accepted only
    while `fence` is the store's current fencing token."""

    epoch: int
    attempt: str
    outcome: Outcome
    manifest: str = ""
    manifest_hash: str = ""
    fence: int = NO_FENCE


@dataclass(frozen=True)
class Notify:
    """Tell every participant the outcome. Only after the decision is durable (or for an abort)."""

    epoch: int
    attempt: str
    outcome: Outcome
    reason: str = ""


@dataclass(frozen=True)
class CollectGarbage:
    """Retention: issued only after a newer commit is durable; never touches the newest committed epoch.
    Runs the GC plan (fito.protocol.gc) under `fence`: only own or older coordinators' attempts."""

    newest_epoch: int
    newest_attempt: str
    fence: int = NO_FENCE


@dataclass(frozen=True)
class Discard:
    """Remove an aborted attempt of one's own by the GC plan's discard (fito.protocol.gc.plan_discard): its
    objects by name, then its directories non-recursively, so a newer coordinator's attempt of the same step,
    created meanwhile, survives. Issued only once no commit of the attempt can land."""

    epoch: int
    attempt: str


Command = Union[WriteShard, Persist, SendReady, WriteManifest, PublishDecision, Notify, CollectGarbage, Discard]


# ---- events (driver -> machine) ----
Expected = tuple[tuple[Key, Union[int, None]], ...]  # the global plan: (key, byte length or None: any)


@dataclass(frozen=True)
class Begin:
    """Start an attempt. Participants read epoch and attempt only. The coordinator also takes its fencing
    token (the executor acquired it before the coordinator's first write) and, for a global plan, every item
    the plan saves: on the last READY it checks coverage itself (None: each rank saves only its own units,
    as in the per-rank v1 format, and there is no global plan to check against)."""

    epoch: int
    attempt: str
    fence: int = NO_FENCE
    expected: Expected | None = None


@dataclass(frozen=True)
class GlobalPlan:
    """The coordinator's final word on what the attempt must cover, when it comes after Begin (fito.dcp: DCP
    hands its metadata, which a reader plans from, only at finish). Taken while collecting READYs."""

    expected: Expected


@dataclass(frozen=True)
class ShardWritten:
    path: str
    size: int
    units: tuple[UnitEntry, ...]


@dataclass(frozen=True)
class Persisted:
    path: str


@dataclass(frozen=True)
class ReadyReceived:
    ready: Ready


@dataclass(frozen=True)
class ManifestWritten:
    path: str
    hash: str


@dataclass(frozen=True)
class DecisionPublished:
    outcome: Outcome


@dataclass(frozen=True)
class PublishRejected:
    reason: str
    # True: the store refused the decision (a stale fence): it never lands. False: the outcome is unknown (the
    # store stopped answering; a decision sent may still land), so a refused commit is never discarded.
    definite: bool = True


@dataclass(frozen=True)
class RankFailed:
    rank: int
    reason: str


@dataclass(frozen=True)
class TimedOut:
    reason: str = "timeout waiting for READY"


@dataclass(frozen=True)
class Committed:
    epoch: int
    attempt: str


@dataclass(frozen=True)
class Aborted:
    epoch: int
    attempt: str
    reason: str = ""


Event = Union[
    Begin, GlobalPlan, ShardWritten, Persisted, ReadyReceived, ManifestWritten, DecisionPublished, PublishRejected,
    RankFailed, TimedOut, Committed, Aborted,
]


# Names are the layout's (fito.protocol.layout); here under the names the machines have always used.
shard_path = object_path
