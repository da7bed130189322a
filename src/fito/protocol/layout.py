"""Attempt names: built and parsed here only. Pure (no clock, no randomness, no I/O): callers pass them in.

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
from typing import NamedTuple

LOG_ID_HEX = 12  # 48 random bits: two logs on one root colliding is a 2**-48 event
_LOG_ID = re.compile(rf"[0-9a-f]{{{LOG_ID_HEX}}}")
NONCE_HEX = 8
_FENCE = r"f(0|[1-9][0-9]{0,17})"  # bounded: a name is parsed in bounded work, whatever a listing holds
_V2 = re.compile(rf"{_FENCE}-([0-9a-f]{{{LOG_ID_HEX}}})-([0-9a-f]{{1,16}})-([0-9a-f]{{{NONCE_HEX}}})")
_V1 = re.compile(rf"{_FENCE}-([0-9a-f]{{1,16}})-([0-9a-f]{{{NONCE_HEX}}})")


class AttemptName(NamedTuple):
    fence: int
    log_id: str | None  # None: a fito v1 name, which carries no log identity
    millis: int  # wall clock when the attempt began (orders attempts of one step, not a protocol fact)
    nonce: str


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
    """The parts of an attempt name, or None for a name fito's layout did not make."""
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
