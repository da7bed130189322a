"""`fito export`: a committed step's full tensors as Hugging Face safetensors (or one torch.save file).

Output, in the directory OUT (created if missing; one that already holds an export is refused):
- safetensors, up to `max_shard_bytes` of tensors: `model.safetensors`;
- beyond: `model-00001-of-0000N.safetensors` ... and `model.safetensors.index.json`
  ({"metadata": {"total_size": bytes}, "weight_map": {name: file}}), Hugging Face's names and split rule
  (a file is closed before the tensor that would take it past the size; a bigger tensor gets a file alone);
- `--format torch`: `pytorch_model.bin`, a plain `torch.save` of {name: tensor} (loadable with
  `torch.load(..., weights_only=True)`; it holds every exported tensor in memory at once).
Names (fito.export.tensors): `<entry>.<key>...`; with `only=PREFIX` only the tensors under PREFIX, with
"PREFIX." taken off, so `only="model"` gives the names of `model.state_dict()` that `from_pretrained` expects.

Each safetensors file is written in the format's documented layout (8-byte little-endian header length, the
JSON header with "__metadata__": {"format": "pt", ...} and each tensor's dtype, shape and data offsets, then
the bytes) one tensor at a time, as each is read and verified: memory holds one tensor (and one pack of
small ones), not the file. The safetensors library writes only from a dict of tensors held in memory; it
checks every file's header here before the file is given its name. Everything is written under temporary
names and fsynced, and renamed into place only once every file is whole; any failure (a damaged byte, a
full disk) removes what was written, so OUT never holds a partial export."""
from __future__ import annotations

import json
import os
import re
import secrets
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from fito.export.tensors import Leaf, StepTensors
from fito.storage import Storage

SAFETENSORS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # Hugging Face's default ("5GB")

# torch dtype -> safetensors dtype (the format's spec; the set every safetensors >= 0.4 reads)
DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}


@dataclass
class ExportResult:
    root: str
    step: int
    attempt: str
    out: str
    format: str
    files: list[str] = field(default_factory=list)
    tensors: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # numpy arrays of the picked entries (no torch tensor)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_size(text: str) -> int:
    """"5GB" (10**9), "500MiB" (2**20), "1048576" (bytes) -> bytes, as Hugging Face's max_shard_size."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", text, re.IGNORECASE)
    if not found:
        raise ValueError(f"size {text!r}: use bytes or a number with KB, MB, GB, KiB, MiB or GiB (e.g. 5GB)")
    number, unit = float(found.group(1)), (found.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    size = int(number * scale)
    if size < 1:
        raise ValueError(f"size {text!r}: must be at least 1 byte")
    return size


def export(root: str | os.PathLike[str] | Storage, out: str | os.PathLike[str], *, step: int | None = None,
           only: str | None = None, format: str = "safetensors", max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
           progress: Callable[[int], None] | None = None, on_total: Callable[[int], None] | None = None) -> ExportResult:
    """Write the tensors of the newest committed step (or `step`) of `root` into the directory `out`."""
    if format not in ("safetensors", "torch"):
        raise ValueError(f"format {format!r}: use 'safetensors' or 'torch'")
    src = StepTensors(root, step, progress=progress)
    leaves = src.select([only] if only else None)
    named = _names(leaves, only)
    if format == "safetensors":
        bad = [f"{n} ({leaf.dtype})" for n, leaf in named if leaf.dtype not in DTYPE_CODES]
        if bad:
            raise ValueError(f"{len(bad)} tensors have dtypes safetensors does not store here: {', '.join(bad[:5])}; "
                             "use --format torch")
    total = sum(leaf.nbytes for _, leaf in named)
    if on_total is not None:
        on_total(total)
    dest = Path(out)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    taken = sorted(p.name for p in dest.iterdir() if p.name in (SAFETENSORS, INDEX, TORCH_FILE) or SHARD.fullmatch(p.name))
    if taken:
        raise FileExistsError(f"{dest} already holds an export ({', '.join(taken[:4])}); give an empty or new "
                              "directory (a new export never mixes its files with an old one's)")
    result = ExportResult(src.storage.url, src.step, src.decision.attempt, str(dest), format,
                          tensors=len(named), bytes=total, skipped=list(src.skipped))
    nonce = f"{os.getpid()}-{secrets.token_hex(4)}"
    written: list[tuple[Path, Path]] = []  # (temporary, final)

    def new(name: str) -> Path:
        tmp, final = dest / f".{name}.fito-tmp-{nonce}", dest / name
        written.append((tmp, final))
        return tmp
    try:
        if format == "torch":
            _write_torch(new(TORCH_FILE), named, src)
        else:
            metadata = {"format": "pt", "fito_step": str(src.step)}
            shards = _shards(named, max_shard_bytes)
            names = [SAFETENSORS] if len(shards) == 1 else \
                [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
            for file, shard in zip(names, shards):
                _write_safetensors(new(file), shard, src, metadata)
            if len(shards) > 1:
                weight_map = {n: file for file, shard in zip(names, shards) for n, _ in shard}
                doc = {"metadata": {"total_size": total, "fito_step": src.step}, "weight_map": weight_map}
                _write_bytes(new(INDEX), json.dumps(doc, indent=2).encode() + b"\n")
        for tmp, final in written:  # every file whole and durable: now give them their names
            os.replace(tmp, final)
        _fsync_dir(dest)
    except BaseException:
        for tmp, final in written:
            tmp.unlink(missing_ok=True)
        if created:
            try:
                dest.rmdir()
            except OSError:
                pass
        raise
    finally:
        src.release()
    result.files = [final.name for _, final in written]
    return result


def _names(leaves: list[Leaf], only: str | None) -> list[tuple[str, Leaf]]:
    """(exported name, leaf): with `only`, "only." taken off each name (a tensor named `only` keeps it)."""
    out, seen = [], set()
    for leaf in leaves:
        name = leaf.name[len(only) + 1:] if only and leaf.name != only else leaf.name
        if name in seen or name == "__metadata__":
            raise ValueError(f"two tensors would be exported as {name!r} under --only {only!r}; choose a "
                             "longer prefix, or none")
        seen.add(name)
        out.append((name, leaf))
    return out


def _shards(named: list[tuple[str, Leaf]], limit: int) -> list[list[tuple[str, Leaf]]]:
    """Hugging Face's split: in order, a new file before the tensor that would take the current past `limit`."""
    shards: list[list[tuple[str, Leaf]]] = [[]]
    size = 0
    for name, leaf in named:
        if shards[-1] and size + leaf.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append((name, leaf))
        size += leaf.nbytes
    return shards


def _write_safetensors(path: Path, shard: list[tuple[str, Leaf]], src: StepTensors, metadata: dict[str, str]) -> None:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, leaf in shard:
        header[name] = {"dtype": DTYPE_CODES[leaf.dtype], "shape": list(leaf.shape), "data_offsets": [offset, offset + leaf.nbytes]}
        offset += leaf.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the library writes it
    with open(path, "xb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, leaf in shard:
            t = src.read(leaf)  # verified before a byte of it is written
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            del t
        f.flush()
        os.fsync(f.fileno())
    _check_with_library(path, [n for n, _ in shard])


def _check_with_library(path: Path, names: list[str]) -> None:
    """The safetensors library parses the header (offsets contiguous, covering the file) before the name."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        found = sorted(f.keys())
    if found != sorted(names):
        raise RuntimeError(f"{path}: the safetensors header lists {len(found)} tensors, {len(names)} were written")


def _write_torch(path: Path, named: list[tuple[str, Leaf]], src: StepTensors) -> None:
    tensors = {name: src.read(leaf) for name, leaf in named}
    src.release()
    with open(path, "xb") as f:
        torch.save(tensors, f)
        f.flush()
        os.fsync(f.fileno())


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
