"""Full tensors of one committed step, by name: the read side of `fito export` and `fito.load_tensors`.

Names. A tensor's name is its path in the saved state joined with "." (torch's state_dict convention):
`<entry>.<key>[.<key>...]`, e.g. `model.transformer.wte.weight`, `optim.state.transformer.wte.weight.exp_avg`;
a tensor saved as an entry of its own is named by the entry. A selection key picks the tensor of exactly
that name and every tensor under it (`model` picks `model.*`, never `models.*`). Rank-local entries
(RNGState, DataPosition, values that differed between ranks) have one copy per saving rank and no full
tensor: they are not listed (restore them with fito.Checkpointer); neither are numpy arrays.

Reading is the restore's read path (fito.dcp.reader.Reader over the step's manifest): the decision is chosen
as a restore chooses it (newest committed, or `step`; never an undecided attempt), the manifest is checked
against the decision's hash, every object's header and size before its bytes, and every block against its
hash before the bytes are handed on. A tensor is consolidated from whatever chunks the saving ranks wrote
(FSDP2 shards, TP DTensors, replicas written once, plain tensors): each chunk that is contiguous in the full
tensor is read straight into it; another chunk goes through one buffer of its own size. Small tensors
packed together (fito.ckpt.packs) are read as the span of blocks holding the selected members of a pack, kept
while the next members are taken from it. Only the blocks of the selected tensors are read."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from fito.ckpt.entries import parse_doc
from fito.ckpt.rank_local import doc_key, pack_path, parse_key, tensor_key
from fito.commit.transport import LocalTransport
from fito.plan.tree import DTYPES
from fito.commit import decision
from fito.coord.base import Decision
from fito.commit.manifests import manifest_bytes
from fito.dcp.reader import Reader
from fito.errors import StateMismatchError, UnsafeCheckpointError
from fito.format import manifest as manifest_fmt
from fito.format.manifest import ShardedManifest
from fito.storage import Storage, open_storage

@dataclass(frozen=True)
class Leaf:
    """One full tensor of the step: its name, dtype and global shape, and the manifest item holding it
    (`member`: (offset, length) inside that item when it is a pack of small tensors)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    item: str
    member: tuple[int, int] | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def selects(key: str, name: str) -> bool:
    """Whether selection key `key` picks the tensor `name`: the name itself, or a name under it."""
    return name == key or name.startswith(key + ".")


class StepTensors:
    """The full tensors of one committed step of `root` (newest, or `step`). Nothing is read but the decision
    log and the manifest until `select` (the documents of the entries it may pick) and `read`."""

    def __init__(self, root: str | os.PathLike[str] | Storage, step: int | None = None, *,
                 progress: Callable[[int], None] | None = None) -> None:
        storage = open_storage(root, create=False)
        from fito.ckpt.inspect import chosen
        self.decision: Decision = chosen(storage, step)  # the restore's own choice, from the storage's own log
        d = self.decision
        data = manifest_bytes(storage, d)  # checked against the decision's hash before it is parsed
        found = manifest_fmt.format_of(data)
        if found != manifest_fmt.FORMAT:
            raise UnsafeCheckpointError(path=d.manifest, unit=None, expected=f"a {manifest_fmt.FORMAT} manifest",
                                        found=repr(found), hint="steps saved by fito before the sharded format can "
                                        "be restored with fito.Checkpointer (and saved again to export them)")
        self.manifest: ShardedManifest = manifest_fmt.parse(data, where=d.manifest, epoch=d.epoch, attempt=d.attempt)
        self.reader = Reader(storage, decision=d, manifest=self.manifest, transport=LocalTransport(), progress=progress)
        # read_value / verify_all set these from the given manifest; the block reads below need them too
        self.reader._manifest, self.reader._where = self.manifest, d.manifest
        self.storage = storage
        self.skipped: list[str] = []  # tensors of the picked entries that have no full tensor (numpy arrays)
        self._checked: set[int] = set()
        self._span: tuple[str, int, int, torch.Tensor] | None = None  # (pack, begin, end, verified bytes)
        self._wanted: dict[str, tuple[int, int]] = {}  # pack -> [first, last) byte of its selected members

    @property
    def step(self) -> int:
        return self.decision.epoch

    @property
    def bytes_read(self) -> int:
        """Payload bytes read by this object so far (whole blocks; object headers not counted)."""
        return self.reader.bytes_read

    def entries(self) -> list[str]:
        """The replicated entries of the step, in manifest order (rank-local ones have no full tensors)."""
        out = []
        for key in self.manifest.values:
            rank, entry, is_doc = parse_key(key)
            if is_doc and rank is None:
                out.append(entry)
        return out

    # ---------------------------------------------------------------- naming and selection
    def select(self, keys: Iterable[str] | None = None) -> list[Leaf]:
        """The tensors picked by `keys` (None: every tensor), in saved order. A key that picks nothing is
        refused, naming the entries the step holds."""
        wanted = None if keys is None else list(keys)
        if wanted is not None and not all(isinstance(k, str) and k for k in wanted):
            raise ValueError(f"keys={wanted!r}: give tensor names or prefixes (non-empty strings), e.g. ['model']")
        entries = [e for e in self.entries()
                   if wanted is None or any(selects(k, e) or selects(e, k) for k in wanted)]
        leaves: list[Leaf] = []
        seen: dict[str, str] = {}
        for entry in entries:
            for leaf in self._leaves(entry):
                if wanted is not None and not any(selects(k, leaf.name) for k in wanted):
                    continue
                if leaf.name in seen:
                    raise StateMismatchError(f"{self.decision.manifest}: items {seen[leaf.name]!r} and {leaf.item!r} "
                                             f"both export as {leaf.name!r} (a key holding '.' or '/'); select "
                                             "them one at a time with fito.load_tensors")
                seen[leaf.name] = leaf.item
                leaves.append(leaf)
        for k in wanted or []:
            if not any(selects(k, leaf.name) for leaf in leaves):
                raise ValueError(f"{self.storage.url} step {self.step}: no tensor is named {k!r} or starts with "
                                 f"{k + '.'!r}; its entries: {', '.join(self.entries()) or 'none'}")
        self._wanted = {}
        for leaf in leaves:
            if leaf.member is not None:
                lo, hi = self._wanted.get(leaf.item, (leaf.member[0], leaf.member[0]))
                self._wanted[leaf.item] = (min(lo, leaf.member[0]), max(hi, sum(leaf.member)))
        return leaves

    def _leaves(self, entry: str) -> list[Leaf]:
        m, where = self.manifest, f"{self.decision.manifest}: {entry}"
        doc = parse_doc(self.reader.read_value(doc_key(entry, None)), where)
        out = []
        for i, path in enumerate(doc["keys"]):
            tag, dtype, shape = doc["specs"][i]
            name = entry if path == "" else f"{entry}.{path.replace('/', '.')}"
            if tag != "T":
                self.skipped.append(name)
                continue
            if i in doc["packed"]:
                n, offset, length = doc["packed"][i]
                item = tensor_key(entry, None, pack_path(n))
                t = m.tensors.get(item)
                if t is None or t.dtype != "uint8" or t.shape != (doc["pack_bytes"][n],) or len(t.chunks) != 1:
                    raise UnsafeCheckpointError(path=self.decision.manifest, unit=item, expected=f"pack {n} of {entry}: "
                                                f"one uint8 chunk of {doc['pack_bytes'][n]} bytes",
                                                found="none" if t is None else f"{t.dtype}{list(t.shape)} in {len(t.chunks)} chunks")
                out.append(Leaf(name, DTYPES[dtype], tuple(shape), item, (offset, length)))
                continue
            item = tensor_key(entry, None, path)
            t = m.tensors.get(item)
            if t is None or t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise UnsafeCheckpointError(path=self.decision.manifest, unit=item, expected=f"a tensor {dtype}{list(shape)} "
                                            f"as {entry}'s document says", found="none" if t is None else f"{t.dtype}{list(t.shape)}")
            out.append(Leaf(name, DTYPES[dtype], tuple(shape), item))
        return out

    # ---------------------------------------------------------------- reading
    def read(self, leaf: Leaf) -> torch.Tensor:
        """A new contiguous tensor holding `leaf`'s bytes, every one verified against its block hash."""
        out = torch.empty(leaf.shape, dtype=leaf.dtype)
        flat = out.reshape(-1).view(torch.uint8)
        if leaf.member is not None:
            offset, length = leaf.member
            if length:
                begin, buf = self._pack_span(leaf, offset, offset + length)
                flat.copy_(buf[offset - begin:offset - begin + length])
            return out
        for c in self.manifest.tensors[leaf.item].chunks:
            if not c.piece.length:
                continue
            self._check_object(c.piece.rank)
            box = out[tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes))]
            if box.is_contiguous():  # a row range (FSDP2's dim-0 shards, a whole tensor): straight into place
                self.reader._read_blocks(c.piece, leaf.item, 0, c.piece.length, into=box.reshape(-1).view(torch.uint8))
            else:  # a column block (TP on dim 1): one buffer of the chunk's size, then into place
                buf, _ = self.reader._read_blocks(c.piece, leaf.item, 0, c.piece.length)
                box.copy_(buf.view(leaf.dtype).view(c.sizes))
        return out

    def _pack_span(self, leaf: Leaf, start: int, end: int) -> tuple[int, torch.Tensor]:
        """The verified blocks of `leaf`'s pack holding the selected members (read once per pack, kept while
        the members are taken from it), with the pack byte where they begin."""
        span = self._span
        if span is not None and span[0] == leaf.item and span[1] <= start and end <= span[2]:
            return span[1], span[3]
        self._span = None  # free the previous pack's bytes before reading the next
        lo, hi = self._wanted.get(leaf.item, (start, end))
        lo, hi = min(lo, start), max(hi, end)
        piece = self.manifest.tensors[leaf.item].chunks[0].piece
        self._check_object(piece.rank)
        buf, begin = self.reader._read_blocks(piece, leaf.item, lo, hi)
        self._span = (leaf.item, begin, begin + len(buf), buf)
        return begin, buf

    def _check_object(self, rank: int) -> None:
        """The object's size and header (epoch tag, rank, attempt, item count), once, before its bytes."""
        if rank not in self._checked:
            self.reader._check_object(rank)
            self._checked.add(rank)

    def release(self) -> None:
        """Drop the pack bytes kept between reads."""
        self._span = None


def load_tensors(root: str | os.PathLike[str] | Storage, keys: str | Sequence[str] | None = None,
                 step: int | None = None) -> dict[str, torch.Tensor]:
    """Verified full tensors of a committed step, by name, without restoring into live objects.

    `root`: a checkpoint directory (or a fito Storage). `step`: the newest committed step by default (the one
    a restore would pick; never an uncommitted attempt). `keys`: a name or a list of names; each picks the
    tensor of exactly that name and every tensor under it, so `keys="model"` gives the model's weights and
    reads none of the optimizer's bytes. Names are the tensors' paths in the saved state joined with "."
    (`model.linear.weight`, `optim.state.linear.weight.exp_avg`); to load into a module,
    `{k.removeprefix("model."): v for k, v in tensors.items()}`. Whatever world size and parallelism saved
    the step (FSDP2, TP, DDP, one process), each tensor comes back whole, in its saved dtype, owned and
    contiguous, every byte checked against its block hash; only the blocks of the picked tensors are read,
    each straight into the tensor returned where the saved chunk is contiguous in it. Rank-local entries
    (RNGState, DataPosition) are not returned. Raises NoCommittedEpochError (nothing committed, or not
    `step`), CheckpointCorruptError (a damaged byte, naming file, tensor and block), ValueError (a key that
    picks nothing, naming the entries there are)."""
    src = StepTensors(root, step)
    picked = src.select([keys] if isinstance(keys, str) else keys)
    try:
        return {leaf.name: src.read(leaf) for leaf in picked}
    finally:
        src.release()
