"""What the model checker's state is made of: a `World` (every process's machine and pending commands, the
network, the simulated disk, the decision log, the fence tokens) with its `Ghost` history (what was ever
committed or aborted, which no process knows), and the `Config` of a search (ranks, attempts, epochs, which
faults are explored)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from fito.model.protocols import Record
from fito.model.simfs import SimDisk

Attempt = tuple[int, str]


class Ghost(NamedTuple):
    """History the properties need but no process knows: what was committed or aborted, ever."""

    committed: tuple[Attempt, ...]  # in commit order
    aborted: tuple[Attempt, ...]  # sorted
    current: Attempt
    attempts: int  # attempts of the current epoch begun so far
    named: int  # attempts begun in the whole run (names them)
    reader: int = -1  # the read-only opener (Config.reader): -1 not yet opened, else the token it took (0: none)
    intruder: int = 0  # a token taken by what must never fence the live job (a reader, an older job's new save)
    fenced_out: str = ""  # an attempt whose decision was refused because an intruder held the newest token
    zombie_saved: bool = False  # the zombie coordinator's job began its next save (Config.zombie_saves)
    # (attempt, which copy) of every copy of the replicated item written (Config.replicas): 0 the value, 1 another
    replica_copies: tuple[tuple[Attempt, int], ...] = ()


class World(NamedTuple):
    machines: tuple  # participants 0..n-1, then the coordinator
    pending: tuple[tuple, ...]  # commands each process emitted and has not executed yet
    net: tuple[tuple[int, object], ...]  # in-flight messages (destination, event), sorted: a multiset
    disk: SimDisk
    store: tuple[Record, ...]  # the durable, atomic decision log
    ghost: Ghost
    fence: tuple[int, ...] = (0, 0, 0)  # the store's newest token, then the token of coord and of the zombie
    owners: tuple[tuple[str, int], ...] = ()  # attempt -> fencing token of the coordinator that began it


@dataclass(frozen=True)
class Config:
    ranks: int = 2
    attempts: int = 1  # attempts per epoch; more than one lets a job restart retry the save
    epochs: int = 1  # epochs saved after the committed epoch 1 (2, 3, ...), each once the previous committed
    zombies: bool = False  # a job restart may leave the old coordinator running (fencing must stop it)
    # Checkpointer before b7688c9: the token was taken at the first publish, and garbage collection deleted
    # every undecided attempt. Now (the default): token taken when the coordinator starts, and GC deletes
    # only undecided attempts of its own or older coordinators (attempt names carry the fence).
    fence_at_first_publish: bool = False
    keep: int = 1  # retention: committed epochs kept after a commit
    crashes: bool = True
    message_loss: bool = True
    timeouts: bool = True
    # every coordinator is begun with discard=True, as the library's: its decided abort discards its attempt
    discard: bool = False
    # a rank's write may vouch for none of its chunks (its plan missed them): the coverage check must abort
    short_writes: bool = False
    # a read-only opener (fito inspect, a Checkpointer that only restores) opens the root once, at any point
    reader: bool = False
    # with zombies: the surviving old coordinator's job goes on and begins its next save (once)
    zombie_saves: bool = False
    # every rank writes a copy of one replicated item; a rank's copy may differ (the coordinator must refuse)
    replicas: bool = False
    # at a job restart without zombies, the files of attempts never committed are settled (fito.model.
    # explorer_model.settle_dead): their page-cache states are unobservable; False explores them all
    settle_dead: bool = True
    # the decision store may be unreachable at a publish: the decision landed or not, the coordinator cannot
    # tell (PublishRejected(definite=False), fito.commit.executor.publish_decision); no discard follows a commit
    store_unreachable: bool = False
    # one state per class of states equal up to a renaming of ranks (fito.model.symmetry); False: every state
    symmetry: bool = True
