"""Fleet epochs (paper §7, §9.2): a cluster moves from protocol/firmware/config epoch k to k+1 through a
linearizable decision, never by a clock.

The store keeps one totally ordered chain of epoch decisions (epoch 0 is the implicit start). A transition
k -> k+1 commits only if the proposer's fencing token is current and epoch k is still the newest, so two
coordinators can never both move the fleet, and a zombie coordinator cannot move it at all. Nodes hold a
lease, acknowledge the epoch they run, and must be admitted before each collective: admission succeeds only
for a live node whose acknowledged epoch is the committed one, so a node that has not observed the newest
decision is fenced out instead of running a collective under old semantics.
"""
from __future__ import annotations

import abc
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from fito.errors import CoordinationUnavailableError, EpochConflictError, EpochFencedError


@dataclass(frozen=True)
class EpochDecision:
    epoch: int
    config: str  # what the epoch means (e.g. "firmware=1.4;protocol=v2"); opaque to the store
    decision_id: str  # unique per proposal; makes propose idempotent across retries
    fence: int
    revision: int = 0  # the store's commit order (etcd revision, SQLite row)
    created: float = 0.0


GENESIS = EpochDecision(epoch=0, config="", decision_id="genesis", fence=0)


@dataclass(frozen=True)
class NodeLease:
    node: str
    lease_id: int
    ttl: float


class FleetStore(abc.ABC):
    """Where fleet epochs, their fencing tokens and node leases live. Reads are linearizable."""

    @abc.abstractmethod
    def acquire_fence(self) -> int:
        """A fencing token strictly greater than every one handed out before (for transition proposers)."""

    @abc.abstractmethod
    def current_fence(self) -> int:
        ...

    @abc.abstractmethod
    def current(self) -> EpochDecision:
        """The newest committed epoch decision (GENESIS if none)."""

    @abc.abstractmethod
    def history(self) -> list[EpochDecision]:
        """Every committed transition, in epoch order."""

    @abc.abstractmethod
    def propose(self, epoch: int, config: str, fence: int, decision_id: str) -> EpochDecision:
        """Commit the transition to `epoch` (which must be current + 1) if `fence` is current.
        Idempotent on decision_id: if that id already committed, return the stored decision.
        Raises StaleFenceError, EpochConflictError or CoordinationUnavailableError."""

    @abc.abstractmethod
    def wait_for(self, after_epoch: int, timeout: float) -> EpochDecision | None:
        """Block until a decision newer than `after_epoch` is committed (watch); None on timeout."""

    @abc.abstractmethod
    def grant_lease(self, node: str, ttl: float) -> NodeLease:
        ...

    @abc.abstractmethod
    def keepalive(self, lease: NodeLease) -> None:
        """Extend the lease; EpochFencedError if it already expired (the node must re-join)."""

    @abc.abstractmethod
    def revoke(self, lease: NodeLease) -> None:
        ...

    @abc.abstractmethod
    def ack(self, lease: NodeLease, epoch: int) -> None:
        """Record that the node now runs `epoch`; EpochFencedError unless `epoch` is the committed one
        and the lease is live."""

    @abc.abstractmethod
    def admit(self, node: str, epoch: int) -> None:
        """Gate before a collective: pass only if `epoch` is committed-current and `node` holds a live
        acknowledgement of it, in one linearizable check. Otherwise EpochFencedError."""

    @abc.abstractmethod
    def participants(self, epoch: int) -> list[str]:
        """Live nodes that acknowledged `epoch`."""

    def close(self) -> None:  # pragma: no cover - trivial default
        pass


def new_decision_id() -> str:
    return uuid.uuid4().hex


class EpochCoordinator:
    """Proposes transitions. Holds one fencing token; a newer coordinator makes this one a zombie."""

    def __init__(self, store: FleetStore, *, retry_deadline: float = 10.0) -> None:
        self.store = store
        self.fence = store.acquire_fence()
        self.retry_deadline = retry_deadline

    def transition(self, config: str, *, decision_id: str | None = None) -> EpochDecision:
        """Move the fleet from the current epoch to the next one. A call that ended with
        CoordinationUnavailableError may still have committed; call again with the same decision_id."""
        did = decision_id or new_decision_id()
        target = self.store.current().epoch + 1
        return self.store.propose(target, config, self.fence, did)


class EpochFollower:
    """A node's view of the fleet epoch: watches the store, switches before its next collective, and is
    fenced out (EpochFencedError from `before_collective`) while it has not observed the newest decision."""

    def __init__(
        self, store: FleetStore, node: str, *, ttl: float = 5.0,
        on_switch: Callable[[EpochDecision], None] | None = None, watch: bool = True,
    ) -> None:
        self.store, self.node, self.on_switch = store, node, on_switch
        self.lease = store.grant_lease(node, ttl)
        self._lock = threading.Lock()
        self._decision = GENESIS
        self.switches: list[EpochDecision] = []
        self.sync()
        self.switches.clear()  # joining at the current epoch is not a switch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if watch:
            self._thread = threading.Thread(target=self._watch_loop, name=f"fito-epoch-{node}", daemon=True)
            self._thread.start()

    @property
    def epoch(self) -> int:
        return self._decision.epoch

    @property
    def decision(self) -> EpochDecision:
        return self._decision

    def sync(self) -> EpochDecision:
        """Catch up with the committed epoch now (a linearizable read), switch, and acknowledge it."""
        for _ in range(20):
            current = self.store.current()
            with self._lock:
                if current.epoch > self._decision.epoch:
                    if self.on_switch is not None:
                        self.on_switch(current)  # switch semantics before acknowledging them
                    self._decision = current
                    self.switches.append(current)
                try:
                    self.store.ack(self.lease, self._decision.epoch)
                    return self._decision
                except EpochFencedError:
                    if self.store.current().epoch == self._decision.epoch:
                        raise  # not a newer epoch: our lease is gone
                    # a newer epoch committed between our read and our ack: go round again
        raise EpochFencedError(f"node {self.node}: epochs moved faster than it could follow")

    def before_collective(self) -> int:
        """Admission check; returns the epoch to tag the collective with."""
        epoch = self.epoch
        self.store.admit(self.node, epoch)
        return epoch

    def _watch_loop(self) -> None:
        renew = max(self.lease.ttl / 3.0, 0.05)
        last_renew = time.monotonic()
        while not self._stop.is_set():
            try:
                decision = self.store.wait_for(self.epoch, timeout=min(renew, 0.5))
                if decision is not None and not self._stop.is_set():
                    self.sync()
                if time.monotonic() - last_renew >= renew:
                    self.store.keepalive(self.lease)
                    last_renew = time.monotonic()
            except (CoordinationUnavailableError, EpochConflictError):
                self._stop.wait(0.1)  # the store is unreachable: stay on our epoch; admission will fence us
            except EpochFencedError:
                self._stop.wait(0.1)  # lease lost; before_collective keeps failing until the node re-joins

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.revoke(self.lease)
        except (CoordinationUnavailableError, EpochFencedError):
            pass
