"""Names in a checkpoint root: built and parsed here only. Pure (no clock, no randomness, no I/O): callers pass
them in.

    epochs/<step: 12 digits>/<attempt>/rank-<rank: 5 digits>.fito   one rank's object of an attempt
    epochs/<step: 12 digits>/<attempt>/manifest.json                the attempt's manifest

An attempt directory is named `f<fence>-<log id>-<ms>-<nonce>`: the fencing token of the coordinator that
made it, the identity of the decision log it belongs to (12 hex digits, random per log), the wall clock
in milliseconds (hex) and a random nonce (8 hex digits). Names of fito v1 carry no log id: `f<fence>-<ms>-<nonce>`.

Ownership (what retention may delete by name, without a decision naming the attempt): an attempt belongs
to a log iff its name carries that log's id and a fence no newer than the caller's. A v1 name belongs only
to a log that has no identity either (a store without `log_id()`): once a v1 log has been given an id, its
old undecided leftovers are left alone, because a v1 name cannot tell which log made it (a lost and
re-created v1 log restarted at fence 1, so its names collide with the lost log's). Attempts a decision
names are the log's own whatever their name: retention retires and deletes those through the decision.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LOG_ID_HEX = 12  # 48 random bits: two logs on one root colliding is a 2**-48 event
_LOG_ID = re.compile(rf"[0-9a-f]{{{LOG_ID_HEX}}}")
NONCE_HEX = 8
_FENCE = r"f(0|[1-9][0-9]{0,17})"  # bounded: a name is parsed in bounded work, whatever a listing holds
_V2 = re.compile(rf"{_FENCE}-([0-9a-f]{{{LOG_ID_HEX}}})-([0-9a-f]{{1,16}})-([0-9a-f]{{{NONCE_HEX}}})")
_V1 = re.compile(rf"{_FENCE}-([0-9a-f]{{1,16}})-([0-9a-f]{{{NONCE_HEX}}})")


STEPS = "epochs"  # the directory of every step's attempts
MANIFEST = "manifest.json"
_STEP = re.compile(r"[0-9]{12}")
_OBJECT = re.compile(r"rank-([0-9]{5})\.fito")


@dataclass(frozen=True)
class AttemptName:
    fence: int
    log_id: str | None  # None: a fito v1 name, which carries no log identity
    millis: int  # wall clock when the attempt began (orders attempts of one step, not a protocol fact)
    nonce: str

    @property
    def created(self) -> float:
        """When the attempt began, in seconds since the Unix epoch (time.time()'s scale), as its coordinator's
        clock said: an age for GC's grace period, never a protocol fact (clocks of two machines differ)."""
        return self.millis / 1000


@dataclass(frozen=True)
class AttemptPath:
    """An attempt directory, `epochs/<step>/<attempt>`, parsed."""

    step: int
    attempt: str
    name: AttemptName


def step_dir(step: int) -> str:
    """`epochs/<step>`, relative to the root."""
    return f"{STEPS}/{step:012d}"


def attempt_dir(step: int, attempt: str) -> str:
    """Directory of one attempt, relative to the root: unique per (step, attempt), never reused."""
    return f"{step_dir(step)}/{attempt}"


def object_path(step: int, attempt: str, rank: int) -> str:
    """One rank's object of an attempt."""
    return f"{attempt_dir(step, attempt)}/{object_name(rank)}"


def object_name(rank: int) -> str:
    return f"rank-{rank:05d}.fito"


def manifest_path(step: int, attempt: str) -> str:
    return f"{attempt_dir(step, attempt)}/{MANIFEST}"


def parse_step_dir(name: str) -> int | None:
    """The step a directory name in `epochs/` stands for, or None for a name the layout did not make."""
    return int(name) if _STEP.fullmatch(name) else None


def parse_object(name: str) -> int | None:
    """The rank whose object `name` (a file name in an attempt directory) is, or None."""
    m = _OBJECT.fullmatch(name)
    return int(m[1]) if m else None


def parse_attempt_path(rel: str) -> AttemptPath | None:
    """`epochs/<step>/<attempt>` parsed, or None for a path the layout did not make."""
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != STEPS:
        return None
    step, name = parse_step_dir(parts[1]), parse_attempt(parts[2])
    return None if step is None or name is None else AttemptPath(step, parts[2], name)


def valid_log_id(log_id: object) -> bool:
    return isinstance(log_id, str) and _LOG_ID.fullmatch(log_id) is not None


def attempt_name(fence: int, log_id: str | None, millis: int, nonce: str) -> str:
    """The directory name of a new attempt. `log_id` None (a store without identity) gives a v1 name."""
    if not isinstance(fence, int) or fence < 0:
        raise ValueError(f"fence must be a non-negative int, got {fence!r}")
    if log_id is not None and not valid_log_id(log_id):
        raise ValueError(f"log id must be {LOG_ID_HEX} lowercase hex digits, got {log_id!r}")
    if not re.fullmatch(rf"[0-9a-f]{{{NONCE_HEX}}}", nonce) or not 0 <= millis < 16**16 or fence >= 10**18:
        raise ValueError(f"bad nonce {nonce!r} or clock {millis!r}")
    middle = f"{log_id}-" if log_id is not None else ""
    return f"f{fence}-{middle}{millis:x}-{nonce}"


def parse_attempt(name: str) -> AttemptName | None:
    """The parts of an attempt name (fence, log id, creation time, nonce), or None for a name fito's layout
    did not make. Bounded work whatever the name's length."""
    m = _V2.fullmatch(name)
    if m:
        return AttemptName(int(m[1]), m[2], int(m[3], 16), m[4])
    m = _V1.fullmatch(name)
    if m:
        return AttemptName(int(m[1]), None, int(m[2], 16), m[3])
    return None


def same_log(name: str, log_id: str | None) -> bool:
    """Whether attempt `name` was made under log `log_id` (a v1 name: only under a log without identity)."""
    parsed = parse_attempt(name)
    return parsed is not None and parsed.log_id == log_id


def owns(name: str, *, log_id: str | None, fence: int) -> bool:
    """Whether a coordinator of log `log_id` holding `fence` may treat attempt `name` as its own garbage
    (see the module docstring): same log identity, and a fence no newer than its own."""
    parsed = parse_attempt(name)
    return parsed is not None and parsed.log_id == log_id and parsed.fence <= fence
