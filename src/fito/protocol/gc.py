"""The garbage-collection plan: which decisions to retire and which attempt directories (prefixes, on an object
store) to delete, decided from the decision log and a listing of the attempt namespace (`Storage.list` of
`epochs/`, grouped by prefix; a POSIX backend's directories and links as it reports them). Pure (no I/O, no
clock): the library's executor (`fito.commit.retention`) and the model checker (`fito.model.explorer`) both
run THIS plan, so the
rule cannot drift between them.

The rules, each for a reason:
- Retire before delete: `Retire(e, a)` always comes before `Delete` of that attempt, so a crash in between
  leaves a retired decision with files (harmless), never a committed decision without files.
- Never the newest committed; with `keep=None` nothing committed is retired for space. "Newest" for `keep`
  is commit order among the steps up to the newest commit's step: a committed step ABOVE it (a job that
  restarted without restoring saves step 10 beside 200 and 300) is the run's future, never surplus, unless
  the caller asked for a rollback (`rollback=True`: those higher steps are retired and deleted first).
- A commit superseded
  by a later commit of the same step (a step saved twice) is retired, then deleted: the log then says what
  the files say.
- An undecided attempt of another decision log (its name carries another log's identity) is never deleted:
  its log may be lost, and recoverable from exactly those files (`fito recover-log`).
- An undecided or aborted attempt is deleted only when its name parses as the layout's AND its coordinator
  can never publish it: its fence is strictly older than the store's current fence (publish requires the
  current fence), or it is this coordinator's own and this coordinator holds the current fence and runs
  between its own saves. A newer coordinator's attempt is never touched.
- Never a link, never a name the layout did not make: only directories named `epochs/<12 digits>` are looked
  into, only directories in them whose names the layout made are deleted, and an epoch directory is removed
  only when nothing at all is left in it (the executor removes it non-recursively).
- Discard (`plan_discard`, a coordinator's own failed attempt) follows the same rule: its objects by name,
  then its directories non-recursively; the same executor runs both plans.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol, Sequence, TypeVar, Union

from fito.protocol.layout import STEPS, parse_attempt, parse_step_dir
from fito.protocol.messages import attempt_dir, manifest_path, shard_path

EPOCHS = STEPS
DIR, LINK, FILE, OTHER = "dir", "link", "file", "other"  # kinds of listed names



def parse_attempt_fence(name: str) -> int | None:
    """The fence an attempt directory's name carries, or None if the layout did not make this name
    (fito.protocol.layout: `f<fence>-<log id>-<ms hex>-<nonce>`, or v1's `f<fence>-<ms hex>-<nonce>`)."""
    parsed = parse_attempt(name)
    return parsed.fence if parsed else None


class DecisionLike(Protocol):
    """What the plan reads of a decision record (fito.coord.base.Decision, the model's Record)."""

    @property
    def epoch(self) -> int: ...
    @property
    def attempt(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def retired(self) -> bool: ...


class Entry(NamedTuple):
    """One name as the storage reports it (links as links, never followed)."""

    path: str  # relative to the root: "epochs/000000000003" or "epochs/000000000003/f2-..."
    kind: str  # DIR | LINK | FILE | OTHER
    age: float = 0.0  # an attempt's age in seconds, from the time in its name (the grace period of undecided ones)


@dataclass(frozen=True)
class Retire:
    """Mark the committed decision (epoch, attempt) retired in the log: it is no longer restorable."""

    epoch: int
    attempt: str


@dataclass(frozen=True)
class Delete:
    """Delete one attempt directory (recursively, links inside it unlinked, never followed)."""

    path: str
    epoch: int
    attempt: str
    why: str  # surplus | superseded | retired | aborted | undecided


@dataclass(frozen=True)
class RemoveEmptyDir:
    """Remove an epoch directory that the plan leaves empty; non-recursive, so anything created in it
    meanwhile (a live job's new attempt) keeps it. On a storage without directories (an object store) there
    is nothing to remove: a prefix with no objects does not exist."""

    path: str


@dataclass(frozen=True)
class Unlink:
    """Delete one object of an attempt, by the name the layout gives it (a discarded attempt's own objects)."""

    path: str


Action = Union[Retire, Delete, RemoveEmptyDir, Unlink]
D = TypeVar("D", bound=DecisionLike)


class GcPlan(NamedTuple):
    actions: tuple[Action, ...]
    refused: str = ""  # why nothing at all is planned (a stale coordinator)


def live_commits(decisions: Sequence[D]) -> list[D]:
    """The "committed" rule: commit decisions not retired, in commit order; of a step committed more than
    once, the later commit wins (same rule as `DecisionStore.committed`)."""
    latest: dict[int, D] = {}
    for d in decisions:
        if d.outcome == "commit" and not d.retired:
            latest.pop(d.epoch, None)
            latest[d.epoch] = d
    return list(latest.values())


def plan_gc(
    decisions: Sequence[DecisionLike], listing: Sequence[Entry], *, current_fence: int, own_fence: int | None,
    keep: int | None, newest: tuple[int, str] | None = None, grace: float = 0.0,
    fence_of: Callable[[str], int | None] = parse_attempt_fence, owned: Callable[[str], bool] | None = None,
    rollback: bool = False,
) -> GcPlan:
    """Plan one collection.

    decisions: every decision in commit order, read AFTER `current_fence` (so no attempt whose fence is
    older than it can still gain a decision the plan does not see). listing: `epochs` and the names in each
    `epochs/<12 digits>` directory. own_fence: the caller's fence if it is a coordinator; None for an
    operator (`fito gc`) holding none. keep: committed steps to keep (None: all). newest: the attempt the
    caller just committed (kept, and the newest for `keep`, even if the decisions do not show it yet).
    grace: undecided or aborted attempts younger than this many seconds are left alone. owned: whether an
    undecided attempt's name carries this log's identity (fito.protocol.layout.same_log); another log's
    undecided attempt is never garbage to this one (None: every name is this log's, as in the checker).
    rollback: with `keep`, committed steps above the newest commit's step are surplus (the caller rolled
    the run back on purpose); without it they are kept whatever `keep` says."""
    if keep is not None and keep < 1:
        raise ValueError(f"keep={keep}: the newest committed step is always kept; use keep >= 1 or None")
    if own_fence is not None and own_fence != current_fence:
        return GcPlan((), f"stale fence: this coordinator holds {own_fence}, the current one is {current_fence}")

    live = [(d.epoch, d.attempt) for d in live_commits(decisions)]
    if newest is None:
        older = live[:-1]
        newest = live[-1] if live else None
    else:
        older = live[: live.index(newest)] if newest in live else [k for k in live if k != newest]
    # Steps above the newest commit's: kept (never counted against `keep`) unless this is a rollback.
    above = {k for k in older if newest is not None and k[0] > newest[0]}
    older = [k for k in older if k not in above]
    surplus = set(older[: max(0, len(older) - (keep - 1))]) if keep is not None else set()
    if rollback and keep is not None:
        surplus |= above
    live_set = set(live)
    superseded = {(d.epoch, d.attempt) for d in decisions
                  if d.outcome == "commit" and not d.retired and (d.epoch, d.attempt) not in live_set}
    superseded.discard(newest)  # type: ignore[arg-type]

    status: dict[tuple[int, str], str] = {}
    for d in decisions:
        key = (d.epoch, d.attempt)
        if d.outcome == "commit":
            status[key] = "retired" if d.retired else "committed"
        else:
            status.setdefault(key, "aborted")

    kinds = {e.path: e for e in listing}
    actions: list[Action] = []
    doomed: list[tuple[int, str]] = []  # retired by this plan, in commit order
    for d in decisions:
        key = (d.epoch, d.attempt)
        if (key in surplus or key in superseded) and key not in doomed:
            doomed.append(key)
    gone: set[str] = set()
    for epoch, attempt in doomed:
        actions.append(Retire(epoch, attempt))
        path = attempt_dir(epoch, attempt)
        entry = kinds.get(path)
        if entry is not None and entry.kind == DIR and fence_of(attempt) is not None:
            actions.append(Delete(path, epoch, attempt, "surplus" if (epoch, attempt) in surplus else "superseded"))
            gone.add(path)

    keep_keys = (live_set | {newest}) - set(doomed)
    leftovers: list[Delete] = []
    empty: list[RemoveEmptyDir] = []
    children: dict[str, list[Entry]] = {}
    for e in listing:
        parent, _, name = e.path.rpartition("/")
        children.setdefault(parent, []).append(e)
    for epoch_entry in sorted(children.get(EPOCHS, []), key=lambda e: e.path):
        epoch_name = epoch_entry.path.rpartition("/")[2]
        if epoch_entry.kind != DIR or parse_step_dir(epoch_name) is None:
            continue  # a link (an operator's `epochs/latest`) or a foreign name: never looked into
        epoch = int(epoch_name)
        left = 0
        for e in sorted(children.get(epoch_entry.path, []), key=lambda e: e.path):
            name = e.path.rpartition("/")[2]
            if e.path in gone:
                continue
            state = status.get((epoch, name), "undecided")
            foreign = state == "undecided" and owned is not None and not owned(name)
            why = "" if foreign else _deletable(e, state, (epoch, name) in keep_keys, fence_of(name), current_fence,
                                                own_fence, grace)
            if why:
                leftovers.append(Delete(e.path, epoch, name, why))
            else:
                left += 1
        if left == 0:
            empty.append(RemoveEmptyDir(epoch_entry.path))
    return GcPlan(tuple(actions) + tuple(leftovers) + tuple(empty))


def plan_discard(epoch: int, attempt: str, ranks: int) -> GcPlan:
    """What a coordinator deletes of its own attempt that failed before any commit was sent for it: each
    rank's object and the manifest, by name, then the attempt directory and the epoch directory, both
    non-recursively. A newer coordinator may have created its own attempt of the same step meanwhile (this
    one stalled between a check and its delete): that attempt keeps the epoch directory, whatever this one
    saw before. Never a recursive delete: this coordinator may already be fenced out."""
    objects = [shard_path(epoch, attempt, r) for r in range(ranks)] + [manifest_path(epoch, attempt)]
    here = attempt_dir(epoch, attempt)
    return GcPlan(tuple(Unlink(p) for p in objects) + (RemoveEmptyDir(here), RemoveEmptyDir(here.rsplit("/", 1)[0])))


def _deletable(e: Entry, status: str, kept: bool, fence: int | None, current: int, own: int | None,
               grace: float) -> str:
    """Why the attempt directory `e` is garbage ("" if it is not)."""
    if e.kind != DIR or fence is None or kept or status == "committed":
        return ""
    if status == "retired":
        return "retired"  # its decision says it is gone; nobody writes a decided attempt
    unable_to_publish = fence < current or (own is not None and fence == own == current)
    return status if unable_to_publish and e.age >= grace else ""
