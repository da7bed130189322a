"""The model checker's executor: what the library's executor does with each protocol command, done on the
simulated disk (fito.model.simfs), the simulated decision log and the simulated network.

It follows the executor contract of fito.protocol.drive (command in, reply event or None out) so the
explorer drives the machines with `step` exactly as the library drives them with `drive`. One executor is
made per transition, for one process, over one world; the explorer reads the changed parts back."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fito.model.protocols import (
    CommitPoint, DiscardTentative, MarkStable, Record, WriteInPlace, manifest_content, mark_path, replica_copy,
    unit_entry,
)
from fito.model.simfs import SimDisk, content_hash, short_path, unit
from fito.protocol import (
    Aborted, CollectGarbage, Committed, DecisionPublished, ManifestWritten, Notify, Persist, Persisted,
    PublishDecision, PublishRejected, ReadyReceived, SendReady, ShardWritten, UnitEntry, WriteManifest, WriteShard,
)
from fito.model.planted import REPLICA_KEY, CheckDiscardable, DiscardChecked, RemoveTree
from fito.protocol.gc import DIR, Delete, Entry, RemoveEmptyDir, Retire, Unlink, plan_discard, plan_gc
from fito.protocol.layout import step_dir
from fito.protocol.messages import NO_FENCE, Discard, attempt_dir

if TYPE_CHECKING:
    from fito.model.explorer_model import Model
    from fito.model.explorer_world import Attempt, World


class SimExecutor:
    """Executes commands of process `i` over world `w`; `disk`, `store`, `net`, `ghost`, `fence` and `label`
    hold the outcome. Raises FileNotFoundError/FileExistsError as the real storage would."""

    def __init__(self, model: "Model", w: "World", i: int, short: bool = False, differs: bool = False,
                 unreachable: int = 0) -> None:
        self.n, self.i, self.keep = model.n, i, model.config.keep
        self.short = short  # this write vouches for none of its chunks (Config.short_writes)
        self.replicas = model.config.replicas  # the write also holds a copy of the replicated item
        self.differs = differs  # ... and this rank's copy differs from the others' (Config.replicas)
        self.unreachable = unreachable  # a publish: 1 never reached the store, 2 landed but its answer was lost
        self.slot = i - model.n + 1  # index of this coordinator's token in `fence` (coordinators only)
        self.owners = w.owners
        self.disk, self.store, self.net, self.ghost, self.fence = w.disk, w.store, w.net, w.ghost, w.fence
        self.label = ""

    def __call__(self, cmd: object) -> object | None:
        i = self.i
        if isinstance(cmd, WriteShard):
            c = unit(cmd.rank, cmd.epoch, cmd.attempt)
            self.disk = self.disk.makedirs(attempt_dir(cmd.epoch, cmd.attempt)).create(cmd.path, c, i)  # as the library does
            if self.short:
                self.label = f"write shard {short_path(cmd.path)}, vouching for none of its chunks (plan missed them)"
                return ShardWritten(cmd.path, 1, ())
            self.label = f"write shard {short_path(cmd.path)}"
            entries = (unit_entry(cmd.rank, c, cmd.epoch),)
            if self.replicas:
                copy = replica_copy(cmd.epoch, cmd.attempt, self.differs)
                entries += (UnitEntry(REPLICA_KEY[0], 1, 1, content_hash(copy), cmd.epoch),)
                if self.differs:
                    self.label += ", its copy of the replicated item a different value"
                copies = add_attempt(self.ghost.replica_copies, ((cmd.epoch, cmd.attempt), int(self.differs)))
                self.ghost = self.ghost._replace(replica_copies=copies)
            return ShardWritten(cmd.path, 1, entries)
        if isinstance(cmd, WriteInPlace):
            c = unit(cmd.rank, cmd.epoch, cmd.attempt)
            self.disk = self.disk.overwrite(cmd.path, c, i)
            self.label = f"overwrite {cmd.path} in place with epoch {cmd.epoch}"
            return ShardWritten(cmd.path, 1, (unit_entry(cmd.rank, c, cmd.epoch),))
        if isinstance(cmd, Persist):
            # LocalFS.persist on the simulated POSIX disk: fsync the file, then its directory, as ONE step.
            # Dropped is only the point between the two fsyncs (bytes durable, name not). A power failure
            # there leaves the file gone or intact, and both images are among those of the state just
            # before the Persist (entry lost / un-fsynced data kept), which the explorer crashes from
            # (simfs enumerates every un-fsynced state at each explored state). No machine reads
            # durability, only a crash does, so another process's step taken there behaves as before or
            # after the Persist: nothing observable is lost, only states (see tests/model/test_explorer.py).
            parent = cmd.path.rsplit("/", 1)[0] if "/" in cmd.path else ""
            self.disk = self.disk.fsync_file(cmd.path).fsync_dir(parent)
            self.label = f"persist {short_path(cmd.path)}"
            return Persisted(cmd.path)
        if isinstance(cmd, SendReady):
            self.net = net_add(self.net, self.n, ReadyReceived(cmd.ready))
            self.label = f"send READY(e{cmd.ready.epoch}/{cmd.ready.attempt})"
            return None
        if isinstance(cmd, WriteManifest):
            c = manifest_content(cmd.epoch, cmd.attempt, cmd.readies)
            self.disk = self.disk.create(cmd.path, c, i)
            self.label = f"write manifest {short_path(cmd.path)}"
            return ManifestWritten(cmd.path, content_hash(c))
        if isinstance(cmd, PublishDecision):
            return self.publish(cmd)
        if isinstance(cmd, Notify):
            for r in range(self.n):
                ev = Committed(cmd.epoch, cmd.attempt) if cmd.outcome == "commit" else Aborted(cmd.epoch, cmd.attempt, cmd.reason)
                self.net = net_add(self.net, r, ev)
            if cmd.outcome == "abort":
                self.aborted((cmd.epoch, cmd.attempt))
            self.label = f"notify every rank: {cmd.outcome} e{cmd.epoch}/{cmd.attempt}"
            return None
        if isinstance(cmd, CollectGarbage):
            self.collect_garbage(cmd)
            return None
        if isinstance(cmd, CommitPoint):
            self.committed((cmd.epoch, cmd.attempt))
            self.label = f"decide commit e{cmd.epoch}/{cmd.attempt} (the variant's commit point)"
            return None
        if isinstance(cmd, MarkStable):
            self.disk = self.disk.write_durable(mark_path(cmd.rank), ("mark", cmd.epoch, cmd.attempt), i)
            self.label = f"mark e{cmd.epoch}/{cmd.attempt} stable locally (atomic, durable)"
            return None
        if isinstance(cmd, DiscardTentative):
            self.disk = self.disk.unlink(cmd.path)
            self.label = f"discard tentative {short_path(cmd.path)}"
            return None
        if isinstance(cmd, Discard):
            self.discard(cmd)
            return None
        if isinstance(cmd, CheckDiscardable):
            here = attempt_dir(cmd.epoch, cmd.attempt)
            for path in plan_discard(cmd.epoch, cmd.attempt, self.n).actions:
                if isinstance(path, Unlink):
                    self.disk = self.disk.unlink(path.path)
            empty = not _holds(self.disk, step_dir(cmd.epoch), but=here)
            self.label = f"discard e{cmd.epoch}/{cmd.attempt}: objects deleted; e{cmd.epoch}/ " + (
                "holds nothing else" if empty else "holds another attempt")
            return DiscardChecked(empty)
        if isinstance(cmd, RemoveTree):
            self.disk = self.disk.remove_tree(cmd.path)
            self.label = f"remove {cmd.path} recursively"
            return None
        raise TypeError(f"the model does not know how to execute {cmd!r}")  # a new command must be taught

    # ---- the decision log ----
    def publish(self, cmd: PublishDecision) -> object:
        """The decision store's publish: atomic, durable, idempotent on the decision id, refused unless the
        fence the command carries is the store's current one."""
        token = cmd.fence
        if token == NO_FENCE:
            # A coordinator that holds no token yet takes one at its first publish: the Checkpointer before
            # b7688c9 (fence_at_first_publish), and, in every configuration, a coordinator that crashed and was
            # begun for the next save without a new token.
            if self.fence[self.slot] == 0:
                self.fence = _with(_with(self.fence, 0, self.fence[0] + 1), self.slot, self.fence[0] + 1)
            token = self.fence[self.slot]
        att = (cmd.epoch, cmd.attempt)
        if self.unreachable == 1:
            self.label = f"publish decision {cmd.outcome} e{cmd.epoch}/{cmd.attempt}: store unreachable, not landed"
            return PublishRejected("decision store unreachable, outcome unknown", definite=False)
        if token != self.fence[0]:
            self.label = f"publish decision {cmd.outcome} e{cmd.epoch}/{cmd.attempt}: REFUSED, stale fence"
            g = self.ghost
            if g.intruder and self.fence[0] == g.intruder and not g.fenced_out and self.i == self.n:
                # the live job's coordinator, fenced out by a reader or an older job's new save
                self.ghost = g._replace(fenced_out=f"e{cmd.epoch}/{cmd.attempt}")
            return PublishRejected(f"fencing token {token} is stale, current is {self.fence[0]}")
        if not any((r.epoch, r.attempt) == att for r in self.store):
            self.store = self.store + (Record(cmd.epoch, cmd.attempt, cmd.outcome, cmd.manifest, cmd.manifest_hash),)
        if cmd.outcome == "commit":
            self.committed(att)
        else:
            self.aborted(att)
        self.label = f"publish decision {cmd.outcome} e{cmd.epoch}/{cmd.attempt} (durable, atomic)"
        if self.unreachable == 2:  # the library retries until its tries run out, then cannot tell
            self.label += ", its answer lost: store unreachable"
            return PublishRejected("decision store unreachable, outcome unknown", definite=False)
        return DecisionPublished(cmd.outcome)

    def collect_garbage(self, cmd: CollectGarbage) -> None:
        # The library's own plan (fito.protocol.gc), executed on the simulated disk and log. The model names
        # attempts a, b, ...: the fence an attempt name carries in the library is `owners` here.
        owner = dict(self.owners)
        own = cmd.fence if cmd.fence != NO_FENCE else self.fence[self.slot]
        plan = plan_gc(self.store, attempt_listing(self.disk), current_fence=self.fence[0], own_fence=own,
                       keep=self.keep, newest=(cmd.newest_epoch, cmd.newest_attempt),
                       fence_of=lambda name: owner.get(name, 0))
        retired: list[str] = []
        leftovers: list[str] = []
        for action in plan.actions:
            if isinstance(action, Retire):  # durable first: recovery never picks a retired epoch
                key = (action.epoch, action.attempt)
                self.store = tuple(r._replace(retired=True) if (r.epoch, r.attempt) == key else r for r in self.store)
                retired.append(f"e{action.epoch}/{action.attempt}")
            elif isinstance(action, Delete):
                self.disk = self.disk.remove_tree(action.path)
                if f"e{action.epoch}/{action.attempt}" not in retired:
                    leftovers.append(short_path(action.path))
            elif isinstance(action, RemoveEmptyDir):
                self.disk = self.disk.remove_tree(action.path)
        if plan.refused:  # a stale coordinator: retire() would refuse its fence, nothing is deleted
            self.label = "collect garbage: refused, stale fence"
        else:
            self.label = (f"collect garbage (keep {self.keep}): retire+delete {retired}"
                          + (f", delete undecided {leftovers}" if leftovers else ""))

    def discard(self, cmd: Discard) -> None:
        """`plan_discard`, as the library's executor runs it: objects by name, directories only if empty."""
        for action in plan_discard(cmd.epoch, cmd.attempt, self.n).actions:
            if isinstance(action, Unlink):
                self.disk = self.disk.unlink(action.path)
            elif isinstance(action, RemoveEmptyDir) and not _holds(self.disk, action.path):
                self.disk = self.disk.remove_tree(action.path)  # rmdir: nothing is in it
        self.label = f"discard e{cmd.epoch}/{cmd.attempt} (objects by name, directories only if empty)"

    # ---- ghost history ----
    def committed(self, att: "Attempt") -> None:
        if att not in self.ghost.committed:
            self.ghost = self.ghost._replace(committed=self.ghost.committed + (att,))

    def aborted(self, att: "Attempt") -> None:
        if att not in self.ghost.committed:
            self.ghost = self.ghost._replace(aborted=add_attempt(self.ghost.aborted, att))


def attempt_listing(disk: SimDisk) -> list[Entry]:
    """The attempt namespace as a listing would show it: the simulated disk holds files only, so the
    epoch and attempt directories are those that contain a file (links do not exist in the model)."""
    dirs: set[str] = set()
    for p, _ in disk.files:
        parts = p.split("/")
        if parts[0] == "epochs" and len(parts) >= 4:
            dirs.update(("/".join(parts[:2]), "/".join(parts[:3])))
    return [Entry(d, DIR) for d in sorted(dirs)]


def _holds(disk: SimDisk, directory: str, but: str = "") -> bool:
    """Whether `directory` holds a (linked) file, other than under `but`."""
    prefix, skip = directory + "/", (but + "/") if but else None
    return any(p.startswith(prefix) and f.linked and not (skip and p.startswith(skip)) for p, f in disk.files)


def net_add(net: tuple, dest: int, ev: object) -> tuple:
    return tuple(sorted(net + ((dest, ev),), key=lambda m: (m[0], repr(m[1]))))


def add_attempt(items: tuple, att: "Attempt") -> tuple:
    return items if att in items else tuple(sorted(items + (att,)))


def _with(t: tuple, i: int, v: object) -> tuple:
    return t[:i] + (v,) + t[i + 1:]
