"""Symmetry reduction for the model checker: a state's key canonical under permutation of rank ids.

In every protocol the checker explores, ranks are interchangeable: a rank's machine, commands, files,
messages and manifest entries depend on its id only through the id itself. Two states that differ by a
renaming of ranks therefore have isomorphic futures and the same verdicts (every property is symmetric:
"recovery returns all units of one committed attempt" does not care which rank is which). The search keeps
ONE concrete state per class; traces stay concrete, so `replay` re-executes them unchanged.

`canonical_key(w)` sorts the ranks by a rank-free signature of everything that mentions them (machine,
pending commands, messages to and from them, their files, what the coordinator holds of them), renames
ranks to their position in that order, and encodes the renamed state compactly: plain tuples, strings,
ints and frozensets (C-level hashing; enums become their values, multisets frozen counters). Soundness
does not rest on the signature: the key IS the state under a rank renaming, so equal keys mean states
that differ only by a renaming. The signature only decides how many symmetric states share a key.

Renamed are: rank fields of the machines and messages (`rank`, NaiveClock's `done`), the process owning a
file, every "rank-00001"/"rank1"/"rank 1" in a path or reason, content tuples ("unit", rank, ...) and
manifest entries, and content hashes (through the content they hash: fito.model.simfs.content_of)."""
from __future__ import annotations

import enum
import re
import sys
from collections import Counter
from dataclasses import fields, is_dataclass
from typing import Any, Callable

from fito.model.simfs import SimFile, content_of

_RANK_IN_TEXT = re.compile(r"rank([- ]?)([0-9]+)")
_RANK_FIELDS = frozenset({"rank"})
_RANK_SETS = frozenset({"done"})  # ranks, in rank order: a set of renamed ranks
_SET_FIELDS = frozenset({"readies", "expected"})  # ordered by rank: a set once ranks are renamed


class Encoder:
    """Encodes objects of a state with ranks renamed by `perm` (old rank -> new rank; -1: "another rank")."""

    def __init__(self, n: int, perm: tuple[int, ...]) -> None:
        self.n, self.perm = n, perm
        self._strs: dict[str, Any] = {}
        # id(object) -> (object, encoding): states share most of their parts with their parent, so most
        # parts are encoded once. The object is kept so its id cannot be reused while the entry lives.
        self.memo: dict[int, tuple[Any, Any]] = {}
        self.reprs: dict[int, tuple[Any, str]] = {}
        self.nums: dict[int, tuple[Any, int]] = {}

    def num(self, v: Any, kind: int = 0) -> int:
        """A number for v's encoding (kind 0: any part; 1: the network; 2: the disk), memoised like `value`:
        keys are tuples of small numbers, hashed and compared in a few steps. Numbers are one-to-one with
        encodings (`_NUMBERS`, never cleared), so equal keys still mean equal encodings."""
        hit = self.nums.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        if kind == 1:
            enc: Any = (1, frozenset(Counter(self.message(m) for m in v).items()))
        elif kind == 2:
            enc = (2, frozenset((self.text(p), self.file(f)) for p, f in v.files), v.removed)
        else:
            enc = (0, self.value(v))
        out = _NUMBERS.get(enc)
        if out is None:
            out = _NUMBERS[enc] = len(_NUMBERS)
        self.nums[id(v)] = (v, out)
        return out

    def value(self, v: Any) -> Any:
        t = type(v)
        if t is str:
            return self.text(v)
        if t is int or t is bool or v is None:
            return v
        hit = self.memo.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        out = self._value(v, t)
        self.memo[id(v)] = (v, out)
        return out

    def shown(self, v: Any, message: bool = False) -> str:
        """v's encoding as text (of a message in flight: `message`), memoised like `value`: what signatures
        sort by, the same order in every process and every run (hashes and first-seen numbers are not)."""
        hit = self.reprs.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        enc = self.message(v) if message else self.value(v)
        out = _NUMBERED.get(enc)
        if out is None:  # equal encodings are one number; the stable text orders them across processes
            out = _NUMBERED[enc] = sys.intern(_stable(enc))
        self.reprs[id(v)] = (v, out)
        return out

    def rank(self, r: int) -> int:
        return self.perm[r] if 0 <= r < self.n else r

    def proc(self, i: int) -> int:
        return self.perm[i] if i < self.n else i

    def text(self, s: str) -> Any:
        hit = self._strs.get(s)
        if hit is None:
            c = content_of(s)
            if c is not None:
                hit = ("#", self.content(c))  # a hash: what it hashes, renamed (injective)
            elif "rank" in s:
                hit = _RANK_IN_TEXT.sub(self._sub, s)
            else:
                hit = s
            self._strs[s] = hit
        return hit

    def _sub(self, m: re.Match) -> str:
        digits = m.group(2)
        new = self.rank(int(digits))
        return f"rank{m.group(1)}{'?' if new < 0 else str(new).zfill(len(digits))}"

    def content(self, c: Any) -> Any:
        if not isinstance(c, tuple) or not c:
            return c
        kind = c[0]
        if kind == "unit":
            return ("unit", self.rank(c[1])) + c[2:]
        if kind == "manifest":
            return ("manifest", c[1], c[2],
                    frozenset((self.rank(r), self.text(p), self.text(h), t) for r, p, h, t in c[3]))
        if kind == "torn":
            return ("torn", self.content(c[1]), self.content(c[2]))
        return c

    def _value(self, v: Any, t: type) -> Any:
        if t is SimFile:
            return self.file(v)
        if t is tuple:
            return tuple(self.value(x) for x in v)
        if isinstance(v, enum.Enum):
            return v.value
        if is_dataclass(v):
            return self.obj(v)
        if isinstance(v, tuple):  # NamedTuple (a decision Record)
            return tuple(self.value(x) for x in v)
        return v

    def obj(self, v: Any) -> tuple:
        out: list[Any] = [type(v).__name__]
        for name in _field_names(type(v)):
            x = getattr(v, name)
            if name in _RANK_FIELDS:
                out.append(self.rank(x))
            elif name in _RANK_SETS:
                out.append(frozenset(self.rank(i) for i in x))
            elif name in _SET_FIELDS and isinstance(x, tuple):
                out.append(frozenset(self.value(i) for i in x))
            else:
                out.append(self.value(x))
        return tuple(out)

    def file(self, f: Any) -> tuple:
        hit = self.memo.get(id(f))
        if hit is not None and hit[0] is f:
            return hit[1]
        out = (self.content(f.data), self.content(f.durable), f.linked, f.linked_durable, self.proc(f.owner))
        self.memo[id(f)] = (f, out)
        return out

    def message(self, m: tuple[int, Any]) -> tuple:
        return (self.proc(m[0]), self.value(m[1]))


_FIELDS: dict[type, tuple[str, ...]] = {}
_NUMBERED: dict[Any, str] = {}
_NUMBERS: dict[Any, int] = {}


def _stable(x: Any) -> str:
    """repr with every frozenset's members sorted: equal encodings give equal strings in every process
    (a frozenset's own order depends on string hashing, which is seeded per process)."""
    if type(x) is tuple:
        return "(" + ",".join(_stable(i) for i in x) + ")"
    if type(x) is frozenset:
        return "{" + ",".join(sorted(_stable(i) for i in x)) + "}"
    return repr(x)


def _field_names(t: type) -> tuple[str, ...]:
    names = _FIELDS.get(t)
    if names is None:
        names = _FIELDS[t] = tuple(f.name for f in fields(t))
    return names


def _mentions(v: Any, r: int) -> bool:
    """Whether object v (a message event) is about rank r (a READY or a failure report from it)."""
    ready = getattr(v, "ready", None)
    if ready is not None:
        return ready.rank == r
    return getattr(v, "rank", None) == r


def _signature(w: Any, n: int, r: int, enc: Encoder) -> tuple:
    """What rank r holds itself, with r named 0 and every other rank -1: its machine, its pending
    commands, the files it wrote (a rank writes only under its own name) and the messages to and from it.
    Texts (`Encoder.shown`), so ranks sort the same way in every process."""
    owned = sorted(enc.shown(pf) for pf in w.disk.files if pf[1].owner == r)
    msgs = sorted(enc.shown(m, message=True) for m in w.net if m[0] == r or _mentions(m[1], r))
    return (enc.shown(w.machines[r]), enc.shown(w.pending[r]), tuple(owned), tuple(msgs))


def _held(w: Any, n: int, enc: Encoder) -> tuple:
    """What the coordinators (machines, commands, files) and the decision log hold of the rank `enc` names
    0: tells apart ranks whose own signatures are equal."""
    held = [enc.shown(w.machines[i]) for i in range(n, len(w.machines))]
    held += [enc.shown(w.pending[i]) for i in range(n, len(w.pending))]
    held += sorted(enc.shown(pf) for pf in w.disk.files if pf[1].owner >= n)
    held.append(enc.shown(w.store))
    return tuple(held)


class Canonicalizer:
    """`key(world)` for one model: the world under the rank renaming its signatures sort it by."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._encoders: dict[tuple[int, ...], Encoder] = {}
        self._local = [self.encoder(tuple(0 if i == r else -1 for i in range(n))) for r in range(n)]
        self._keys = 0

    def encoder(self, perm: tuple[int, ...]) -> Encoder:
        e = self._encoders.get(perm)
        if e is None:
            e = self._encoders[perm] = Encoder(self.n, perm)
        return e

    def permutation(self, w: Any) -> tuple[int, ...]:
        n = self.n
        own = [_signature(w, n, r, self._local[r]) for r in range(n)]
        if len(set(own)) == n:  # all told apart by what they hold themselves: that order is canonical
            sigs = sorted((own[r], (), r) for r in range(n))
        else:  # ties: what the coordinators and the log hold of each rank decides (for all, consistently)
            sigs = sorted((own[r], _held(w, n, self._local[r]), r) for r in range(n))
        order = [r for _, _, r in sigs]
        perm = [0] * n
        for new, old in enumerate(order):
            perm[old] = new
        return tuple(perm)

    def key(self, w: Any) -> tuple:
        """The canonical key: w under the renaming its rank signatures sort it by."""
        self._keys += 1
        if self._keys % 20000 == 0 and sum(len(e.memo) + len(e.reprs) for e in self._encoders.values()) > 2_000_000:
            for e in self._encoders.values():  # bounded memory: parts of states long explored go
                e.memo.clear()
                e.reprs.clear()
                e.nums.clear()
        return self.key_under(w, self.permutation(w))

    def key_under(self, w: Any, perm: tuple[int, ...]) -> tuple:
        """w's key with rank r renamed perm[r] (any permutation: the tests compute orbits with it)."""
        n = self.n
        enc = self.encoder(perm)
        key: list[Any] = [0] * (2 * n)
        for i in range(n):
            key[perm[i]] = enc.num(w.machines[i])
            key[n + perm[i]] = enc.num(w.pending[i])
        key += [enc.num(m) for m in w.machines[n:]]
        key += [enc.num(p) for p in w.pending[n:]]
        key += [enc.num(w.net, 1), enc.num(w.disk, 2), enc.num(w.store), w.ghost, w.fence, w.owners]
        return tuple(key)

    def renamed(self, w: Any, perm: tuple[int, ...]) -> tuple:
        """The encoding of w with rank r renamed perm[r], readable (`key_under` is the same, parts numbered)."""
        n = self.n
        enc = self.encoder(perm)
        machines: list[Any] = [None] * n
        pending: list[Any] = [None] * n
        for i in range(n):
            machines[perm[i]] = enc.value(w.machines[i])
            pending[perm[i]] = enc.value(w.pending[i])
        coords = tuple(enc.value(m) for m in w.machines[n:]) + tuple(enc.value(p) for p in w.pending[n:])
        net = frozenset(Counter(enc.message(m) for m in w.net).items())
        disk = frozenset((enc.text(p), enc.file(f)) for p, f in w.disk.files)
        store = tuple(enc.value(rec) for rec in w.store)
        return (tuple(machines), tuple(pending), coords, net, disk, w.disk.removed, store, w.ghost, w.fence,
                w.owners)


def identity_key(w: Any) -> Any:
    """The unreduced search's key: the state itself."""
    return w


KeyFn = Callable[[Any], Any]
