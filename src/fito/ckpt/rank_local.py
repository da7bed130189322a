"""Rank-local entries: what each rank holds for itself (RNGState, DataPosition, anything whose value differs
between ranks), saved under per-rank names, and what a restore on another world size does with them.

Names of DCP items (the one place they are built and parsed):
    <entry>[/<path>]                    a tensor of a replicated entry, written once (DCP deduplicates)
    __fito__/<entry>                    the JSON document of a replicated entry
    __rank__/<r>/<entry>[/<path>]       a tensor of rank r's own copy of a rank-local entry
    __rank__/<r>/__fito__/<entry>       the document of rank r's copy
    <entry>/__pack__/<n>                pack n of an entry: small plain tensors' bytes, laid out in its
    __rank__/<r>/<entry>/__pack__/<n>   document (fito.ckpt.packs); a tensor's own path never takes this name

An entry is rank-local if its class says so (`fito_rank_local = True`) or if its bytes differ between ranks
(every rank hashes its plain tensors and document; rank 0 compares and tells every rank). An entry holding
DTensors is sharded, not rank-local: if its other parts differ between ranks, the save is refused.

On restore (`Checkpointer.restore(state, rank_local=...)`), on the world size that saved, rank r gets rank
r's copy. On another world size the policy decides, per entry or for all:
    "error" (default)      StateMismatchError naming the rank-local entries; nothing is restored
    "reset"                those entries keep the caller's current values (logged); the rest is restored
    {new_rank: saved_rank} rank r restores the copy saved by mapping[r] (also applied on the same size)
    {entry: policy}        one of the above per entry; entries not named use "error"."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Union

from fito.commit.transport import Transport
from fito.errors import SaveAbortedError, StateMismatchError, UnsafeCheckpointError
from fito.format.hashing import DEFAULT_ALGORITHM, digest
from fito.plan.values import tensor_bytes

if TYPE_CHECKING:
    from fito.format.manifest import ShardedManifest
    from fito.ckpt.entries import Captured

RANK = "__rank__"
DOC = "__fito__"
PACK = "__pack__"
Policy = Union[str, Mapping[int, int], Mapping[str, Union[str, Mapping[int, int]]]]


def tensor_key(name: str, rank: int | None, path: str) -> str:
    base = name if rank is None else f"{RANK}/{rank}/{name}"
    return base if path == "" else f"{base}/{path}"


def doc_key(name: str, rank: int | None) -> str:
    return f"{DOC}/{name}" if rank is None else f"{RANK}/{rank}/{DOC}/{name}"


def pack_path(n: int) -> str:
    """The path, inside its entry, of the entry's pack `n` (give it to tensor_key like a tensor's path)."""
    return f"{PACK}/{n}"


def is_pack_path(path: str) -> bool:
    head, sep, n = path.partition("/")
    return head == PACK and n.isdigit() and n == str(int(n))


def is_pack_key(key: str) -> bool:
    """Whether a DCP item name is an entry's pack (entry names hold no "/")."""
    if key.startswith(f"{RANK}/"):
        key = key[len(RANK) + 1:].partition("/")[2]
    return is_pack_path(key.partition("/")[2])


def parse_key(key: str) -> tuple[int | None, str, bool]:
    """(saving rank or None, entry name, whether it is the entry's document) of a DCP item name."""
    rank = None
    if key.startswith(f"{RANK}/"):
        r, _, key = key[len(RANK) + 1:].partition("/")
        if not r.isdigit():
            return None, "", False
        rank = int(r)
    if key.startswith(f"{DOC}/"):
        return rank, key[len(DOC) + 1:], True
    return rank, key.partition("/")[0], False


def check_owners(m: "ShardedManifest", where: str) -> None:
    """Rank r's copy of a rank-local entry is written by rank r, into its own object. A manifest placing any
    of its bytes in another rank's object is refused: with two ranks' copies swapped, every hash and item
    count still agrees, and rank r would silently get rank 1-r's RNG or data position."""
    items = [*m.values.items(), *((key, c.piece) for key, t in m.tensors.items() for c in t.chunks)]
    for key, piece in items:
        rank = parse_key(key)[0]
        if rank is not None and piece.rank != rank:
            raise UnsafeCheckpointError(path=where, unit=key, expected=f"rank {rank}'s copy in the object of rank {rank}",
                                        found=f"its bytes in the object of rank {piece.rank}")


# ---------------------------------------------------------------- save: which entries are rank-local
def leaf_digests(entry: Captured) -> list[str | None]:
    """The digest of every plain tensor of an entry (None for DTensors: DCP's planner checks their replicas)."""
    from torch.distributed.tensor import DTensor
    return [None if isinstance(t, DTensor) else digest(DEFAULT_ALGORITHM, tensor_bytes(t)) for t in entry.leaves]


def decide(transport: Transport, entries: list[Captured] | None, digests: list[list[str | None]] | None,
           error: BaseException | None) -> set[str]:
    """Agree with every rank on the rank-local entries. A rank that failed to capture its state makes every
    rank raise (that rank its own error), so no rank goes on into the save's collectives alone."""
    if error is None and entries is not None and digests is not None:
        mine: dict[str, Any] = {"entries": {
            e.name: [digest(DEFAULT_ALGORITHM, e.doc_text().encode(), *(d.encode() for d in ds if d)), e.rank_local, e.sharded]
            for e, ds in zip(entries, digests)}}
    else:
        mine = {"error": f"{type(error).__name__}: {error}", "aborted": isinstance(error, SaveAbortedError)}
    gathered = transport.gather(json.dumps(mine).encode())
    word = json.dumps(_judge([json.loads(g) for g in gathered]) if gathered is not None else None).encode()
    verdict = json.loads(transport.broadcast(word if transport.rank == 0 else None))
    if "error" in verdict:
        if error is not None:
            raise error
        raise (SaveAbortedError if verdict.get("aborted") else StateMismatchError)(verdict["error"])
    return set(verdict["rank_local"])


def _judge(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [f"rank {r}: {m['error']}" for r, m in enumerate(ranks) if "error" in m]
    if failed:
        if any(m.get("aborted") for m in ranks):
            return {"error": f"the save was not started: {'; '.join(failed)[:2000]}", "aborted": True}
        return {"error": f"the state could not be captured, nothing was written: {'; '.join(failed)[:2000]}"}
    names = [list(m["entries"]) for m in ranks]
    if any(n != names[0] for n in names):
        return {"error": f"the ranks save different entries ({', '.join(f'rank {r}: {n}' for r, n in enumerate(names))}); "
                         "every rank passes a state with the same keys, in the same order"}
    local, refused = [], []
    for name in names[0]:
        found = [m["entries"][name] for m in ranks]
        if any(f[1] for f in found) or len({f[0] for f in found}) > 1:
            (refused if any(f[2] for f in found) else local).append(name)
    if refused:
        return {"error": f"entries {refused} hold DTensors, but their other parts (plain tensors, values) differ "
                         "between ranks; a sharded entry must agree on everything it does not shard. Nothing was written"}
    return {"rank_local": local}


# ---------------------------------------------------------------- restore: the policy
KEEP = -1  # `source()` for an entry that keeps the caller's value


@dataclass(frozen=True)
class RankLocalPolicy:
    default: str | Mapping[int, int] = "error"
    per_entry: Mapping[str, str | Mapping[int, int]] | None = None

    @classmethod
    def parse(cls, value: Policy) -> "RankLocalPolicy":
        if isinstance(value, str):
            return cls(_one(value, "rank_local"))
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            return cls("error", {k: _one(v, f"rank_local[{k!r}]") for k, v in value.items()})
        return cls(_one(value, "rank_local"))

    def source(self, name: str, rank: int, saved_world: int, world: int) -> int | None:
        """Whose copy of entry `name` this rank restores: a saved rank, KEEP, or None when the policy is
        "error" and the world size changed (the caller names every such entry in one error)."""
        policy = (self.per_entry or {}).get(name, self.default)
        if isinstance(policy, Mapping):
            if rank not in policy:
                raise StateMismatchError(f"rank_local mapping for {name!r} names no saved rank for rank {rank} "
                                         f"(it maps {dict(policy)}); give every rank of this run a saved rank")
            source = policy[rank]
            if not 0 <= source < saved_world:
                raise StateMismatchError(f"rank_local mapping for {name!r}: rank {rank} -> {source}, but the "
                                         f"checkpoint was saved by ranks 0..{saved_world - 1}")
            return source
        if saved_world == world:
            return rank
        return KEEP if policy == "reset" else None


def _one(value: Any, where: str) -> str | Mapping[int, int]:
    if value in ("error", "reset"):
        return value
    if isinstance(value, Mapping) and all(isinstance(k, int) and not isinstance(k, bool) and isinstance(v, int)
                                          and not isinstance(v, bool) for k, v in value.items()):
        return dict(value)
    raise ValueError(f"{where}={value!r}: use 'error', 'reset', a mapping {{new_rank: saved_rank}}, or a mapping "
                     "{entry: one of those}")


def world_change_error(names: list[str], saved_world: int, world: int, step: int) -> StateMismatchError:
    return StateMismatchError(
        f"step {step} was saved by {saved_world} ranks and is restored on {world}: its rank-local entries "
        f"{names} (saved per rank: RNGState, DataPosition, or values that differed between ranks) have no copy "
        "for each rank of this run. Nothing was restored. Choose: restore(state, rank_local='reset') keeps this "
        "run's current values for them, or rank_local={new_rank: saved_rank, ...} restores another rank's copy "
        f"(e.g. {{r: r % {saved_world} for r in range({world})}}); per entry: rank_local={{'rng': 'reset', ...}}"
    )
