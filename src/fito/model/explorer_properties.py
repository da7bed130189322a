"""The properties the model checker checks at every state, and how: pull the plug, run the variant's
recovery on every post-crash disk POSIX allows (fito.model.simfs.each_crash_image), and compare what it
loads with the ghost history; liveness asks that a quiet system has decided."""
from __future__ import annotations

from typing import Iterable, NamedTuple

from fito.model.explorer_world import Attempt, World
from fito.model.protocols import Recovery, Variant
from fito.model.simfs import MISSING, Content, each_crash_image, unit
from fito.protocol import TimedOut
from fito.protocol.drive import feed

PROPERTIES: dict[str, str] = {
    "AlwaysRecoversOneCommittedEpoch": "always: after any crash, recovery returns all units of ONE committed "
    "(epoch, attempt), or fails loudly; never a mix, never torn bytes",
    "CommittedStaysRecoverable": "always: once an epoch is committed, recovery returns it (or a newer "
    "commit); it may only disappear when a newer commit is durable",
    "AbortedNeverVisible": "always: no unit of an aborted attempt is ever returned by recovery",
    "OnlyANewerWriterFences": "always: the live job's decision is refused only when a newer job's coordinator "
    "took the fence; never a reader, never an older job's coordinator beginning another save",
    "ReplicasAgreeWhenKeptOnce": "always: an attempt is committed only if the copies of each replicated "
    "item its ranks wrote were equal (deduplication keeps one copy; a copy that differs is refused)",
    "EventuallyDecides": "eventually: when no process has work left and no message is in flight, the "
    "attempt is committed or aborted (no silent limbo)",
}


class Violation(NamedTuple):
    property: str
    detail: str


def crash_violations(variant: Variant, ranks: int, w: World) -> tuple[list[Violation], int]:
    """Safety at w: every post-crash disk's recovery against the ghost history; also how many crash
    images were examined."""
    g = w.ghost
    newest = g.committed[-1]
    found: dict[str, Violation] = {}
    images = 0
    for image, rec in each_crash_image(w.disk, lambda read: variant.recover(read, w.store, ranks)):
        images += 1
        assert isinstance(rec, Recovery)
        loaded = _describe_units(rec)
        where = f"power failure now; {image.describe()}; recovery {loaded}"
        got = _uniform(rec.units, ranks) if rec.units is not None else None
        if rec.units is not None and (got is None or got not in g.committed):
            found.setdefault("AlwaysRecoversOneCommittedEpoch", Violation(
                "AlwaysRecoversOneCommittedEpoch",
                f"{where} -- committed so far: {_atts(g.committed)}"))
        if got != newest:
            found.setdefault("CommittedStaysRecoverable", Violation(
                "CommittedStaysRecoverable", f"{where} -- but e{newest[0]}/{newest[1]} is committed"))
        if rec.units is not None and any(_att(c) in g.aborted for c in rec.units if _att(c) is not None):
            found.setdefault("AbortedNeverVisible", Violation(
                "AbortedNeverVisible", f"{where} -- aborted: {_atts(g.aborted)}"))
    return list(found.values()), images


def liveness_violations(w: World, ranks: int, timeouts: bool) -> list[Violation]:
    """EventuallyDecides at w: with nothing pending and nothing in flight, the attempt must be decided
    (or the coordinator's timeout must still be able to decide it)."""
    g = w.ghost
    if g.fenced_out:
        return [Violation("OnlyANewerWriterFences",
                          f"the live job's decision for {g.fenced_out} was refused: the newest fencing token is "
                          f"held by " + ("a read-only opener" if g.intruder == g.reader else
                                         "the old job's coordinator, which took it for its next save"))]
    if any(w.pending) or w.net:
        return []
    if g.current in g.committed or g.current in g.aborted:
        return []
    coord = w.machines[ranks]
    if timeouts and feed(coord, TimedOut()) != (coord, ()):
        return []  # the timeout will still decide
    return [Violation("EventuallyDecides",
                      f"nothing left to do and no message in flight, yet e{g.current[0]}/{g.current[1]} is "
                      f"neither committed nor aborted")]


def replica_violations(w: World) -> list[Violation]:
    """ReplicasAgreeWhenKeptOnce at w: no committed attempt had ranks whose copies of the replica differed."""
    g = w.ghost
    if not g.replica_copies:
        return []
    values: dict[Attempt, set[int]] = {}
    for att, value in g.replica_copies:
        values.setdefault(att, set()).add(value)
    bad = [a for a, v in values.items() if len(v) > 1 and a in g.committed]
    if not bad:
        return []
    return [Violation("ReplicasAgreeWhenKeptOnce",
                      f"{_atts(bad)} committed although the ranks' copies of the replicated item differed: one "
                      "copy was kept and the other ranks' value is silently replaced on restore")]


def _att(c: object) -> Attempt | None:
    return (c[2], c[3]) if isinstance(c, tuple) and c and c[0] == "unit" else None


def _uniform(units: tuple[Content, ...] | None, ranks: int) -> Attempt | None:
    """The (epoch, attempt) if the units are exactly every rank's unit of one attempt, else None."""
    if units is None or len(units) != ranks:
        return None
    first = _att(units[0])
    if first is None:
        return None
    return first if all(u == unit(r, *first) for r, u in enumerate(units)) else None


def _describe_units(rec: Recovery) -> str:
    if rec.units is None:
        return f"fails loudly ({rec.error})"
    parts = []
    for r, c in enumerate(rec.units):
        if c is MISSING:
            parts.append(f"rank{r}=<missing file>")
        elif c is None:
            parts.append(f"rank{r}=<empty file>")
        elif c[0] == "unit":
            parts.append(f"rank{r}=e{c[2]}/{c[3]}")
        else:
            parts.append(f"rank{r}=<torn bytes>")
    return "loads " + ", ".join(parts)


def _atts(items: Iterable[Attempt]) -> str:
    return "[" + ", ".join(f"e{e}/{a}" for e, a in items) + "]"
