"""`fito export` and `fito.load_tensors` in one process: HF's sharded layout past the size threshold, a flipped
bit refused with no output left behind, `--format torch` under weights_only, the CLI contract, and
`load_tensors` reading only the selected tensors' bytes (every read counted by a Storage wrapper)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import fito
from fito import knobs
from fito.cli import main
from fito.coord.sqlite import SqliteDecisionStore
from fito.ckpt.rank_local import parse_key
from fito.commit.manifests import load_sharded_manifest
from fito.format.objects import HEADER
from fito.storage.localfs import LocalFS


def _state(seed: int) -> dict[str, Any]:
    """Linear(256, 128) has a 128 KiB weight (an item of its own); the rest is packed (fito.ckpt.packs)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 256)).sum().backward()
    opt.step()
    return {"model": model, "optim": opt, "rng": fito.RNGState(), "count": 7}


def _names(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of the state by its exported name (what fito.export.tensors documents)."""
    out = {f"model.{k}": v.detach().clone() for k, v in state["model"].state_dict().items()}
    names = {id(p): k for k, p in state["model"].named_parameters()}
    for p, s in state["optim"].state.items():
        out |= {f"optim.state.{names[id(p)]}.{k}": v.clone() for k, v in s.items()}
    return out


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Steps 1 and 2 of a model + AdamW, with 1 KiB blocks; the full tensors of each by name."""
    root = tmp_path / "ck"
    state = _state(0)
    with knobs.override(FITO_BLOCK_BYTES=1024), fito.Checkpointer(root) as ck:
        ck.save(1, state)
        first = _names(state)
        state["model"](torch.randn(4, 256)).sum().backward()
        state["optim"].step()
        ck.save(2, state)
    return root, first, _names(state)


def _same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    if set(got) != set(want):
        return [f"names: extra {sorted(set(got) - set(want))[:5]}, missing {sorted(set(want) - set(got))[:5]}"]
    return [k for k in want if got[k].dtype != want[k].dtype or got[k].shape != want[k].shape or not torch.equal(got[k], want[k])]


def _manifest(root: Path, step: int) -> Any:
    store = SqliteDecisionStore(root / SqliteDecisionStore.FILENAME, create=False)
    try:
        d = [d for d in store.committed() if d.epoch == step][-1]
    finally:
        store.close()
    return load_sharded_manifest(LocalFS(root, create=False), d)


# ---------------------------------------------------------------- export: layout, names, formats
def test_export_writes_hf_index_and_shards_past_the_size_and_one_file_below(saved, tmp_path: Path, capsys) -> None:
    root, _, want = saved
    assert main(["export", str(root), str(tmp_path / "one"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["result"]
    assert doc["files"] == ["model.safetensors"] and sorted(os.listdir(tmp_path / "one")) == ["model.safetensors"]
    assert doc["step"] == 2 and _same(load_file(tmp_path / "one" / "model.safetensors"), want) == []

    assert main(["export", str(root), str(tmp_path / "many"), "--max-shard-size", "100KB", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)["result"]
    index = json.loads((tmp_path / "many" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    n = len(shards)
    assert n >= 3 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert sorted(os.listdir(tmp_path / "many")) == sorted([*shards, "model.safetensors.index.json"]) == sorted(doc["files"])
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in want.values()) == doc["bytes"]
    got: dict[str, torch.Tensor] = {}
    for f in shards:
        part = load_file(tmp_path / "many" / f)
        assert {index["weight_map"][k] for k in part} == {f}
        # HF's rule: a file stays under the limit unless one tensor alone is bigger
        assert len(part) == 1 or sum(t.numel() * t.element_size() for t in part.values()) <= 100_000
        got |= part
    assert _same(got, want) == []


def test_export_reports_progress_up_to_the_bytes_it_writes(saved, tmp_path: Path) -> None:
    from fito.export import export
    root, _, want = saved
    totals: list[int] = []
    seen: list[int] = []
    result = export(root, tmp_path / "p", progress=seen.append, on_total=totals.append)
    assert totals == [result.bytes] == [sum(t.numel() * t.element_size() for t in want.values())]
    assert result.bytes <= sum(seen) <= result.bytes + 4 * 1024 * len(want)  # whole 1 KiB blocks are read


def test_export_step_and_only_strip_the_prefix(saved, tmp_path: Path) -> None:
    root, first, _ = saved
    assert main(["export", str(root), str(tmp_path / "w"), "--step", "1", "--only", "model"]) == 0
    weights = {k.removeprefix("model."): v for k, v in first.items() if k.startswith("model.")}
    assert _same(load_file(tmp_path / "w" / "model.safetensors"), weights) == []


def test_export_torch_format_loads_with_weights_only(saved, tmp_path: Path) -> None:
    root, _, want = saved
    assert main(["export", str(root), str(tmp_path / "t"), "--format", "torch"]) == 0
    assert os.listdir(tmp_path / "t") == ["pytorch_model.bin"]
    assert _same(torch.load(tmp_path / "t" / "pytorch_model.bin", weights_only=True), want) == []


def test_a_flipped_bit_fails_the_export_with_one_line_and_leaves_no_file(saved, tmp_path: Path, capsys) -> None:
    root, _, _ = saved
    m = _manifest(root, 2)
    item = "optim/state/0.weight/exp_avg_sq"  # exported after the model's tensors: earlier files were written
    piece = m.tensors[item].chunks[0].piece
    path = root / m.objects[piece.rank].file
    with open(path, "r+b") as f:
        f.seek(piece.offset + 5000)  # block 4 of the item (1 KiB blocks)
        byte = f.read(1)[0]
        f.seek(piece.offset + 5000)
        f.write(bytes([byte ^ 0x10]))
    out = tmp_path / "new"
    assert main(["export", str(root), str(out), "--max-shard-size", "100KB"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fito export: error: ")
    assert m.objects[piece.rank].file in err and f"'{item} block 4'" in err and "expected xxh3" in err
    assert not out.exists()  # created by the export, removed with everything written into it
    out.mkdir()
    assert main(["export", str(root), str(out)]) == 4
    assert os.listdir(out) == []  # no temporary names either
    capsys.readouterr()
    with pytest.raises(fito.CheckpointCorruptError, match="block 4"):
        fito.load_tensors(root, "optim.state.0.weight.exp_avg_sq")
    assert _same(fito.load_tensors(root, "model"), {k: v for k, v in saved[2].items() if k.startswith("model.")}) == []


def test_export_cli_contract(saved, tmp_path: Path, capsys) -> None:
    root, _, _ = saved
    out = tmp_path / "o"
    assert main(["export", str(root), str(out), "--only", "mod", "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "error" and "'mod'" in doc["result"]["error"] and "model, optim" in doc["result"]["error"]
    assert not out.exists()  # refused before anything was touched
    assert main(["export", str(root), str(out), "--step", "9"]) == 3
    assert main(["export", str(tmp_path / "nothing"), str(out)]) == 3
    assert main(["export", str(root), str(out), "--max-shard-size", "5 parsecs"]) == 2
    assert not out.exists()
    assert main(["export", str(root), str(out)]) == 0
    assert main(["export", str(root), str(out), "--format", "torch"]) == 2  # never mixed with an earlier export
    assert "already holds an export" in capsys.readouterr().err
    assert os.listdir(out) == ["model.safetensors"]


# ---------------------------------------------------------------- load_tensors
def test_load_tensors_names_keys_and_steps(saved) -> None:
    root, first, second = saved
    assert _same(fito.load_tensors(root), second) == []  # the newest committed; no rng (rank-local), no values
    assert _same(fito.load_tensors(root, step=1), first) == []
    assert sorted(fito.load_tensors(root, "model.0")) == ["model.0.bias", "model.0.weight"]  # not model.0x...
    assert sorted(fito.load_tensors(root, ["model.2.bias", "optim.state.2.bias.step"])) == ["model.2.bias", "optim.state.2.bias.step"]
    with pytest.raises(ValueError, match="'mod'.*model, optim"):
        fito.load_tensors(root, "mod")
    with pytest.raises(fito.NoCommittedEpochError):
        fito.load_tensors(root, step=3)
    undecided = root / "epochs" / "000000000003" / "a-undecided"  # written, never committed: never chosen
    undecided.mkdir(parents=True)
    (undecided / "rank-00000.fito").write_bytes(b"partial")
    assert _same(fito.load_tensors(root, "model"), {k: v for k, v in second.items() if k.startswith("model.")}) == []


def test_a_step_of_the_v1_format_is_refused_by_name(tmp_path: Path, capsys) -> None:
    from fito.testing.v1_format import save_v1
    with fito.Checkpointer(tmp_path / "v1") as ck:
        save_v1(ck, 1, {"w": torch.ones(3)})
    with pytest.raises(fito.UnsafeCheckpointError, match="fito-manifest/2.*restored with fito.Checkpointer"):
        fito.load_tensors(tmp_path / "v1")
    assert main(["export", str(tmp_path / "v1"), str(tmp_path / "out")]) == 4 and not (tmp_path / "out").exists()


class CountingStorage:
    """The real LocalFS, recording (file, offset, bytes) of every read: what a reader really asked the disk for."""

    def __init__(self, root: Path) -> None:
        self.inner = LocalFS(root, create=False)
        self.root = self.inner.root
        self.reads: list[tuple[str, int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_bytes(self, rel: str, limit: int) -> bytes:
        data = self.inner.read_bytes(rel, limit)
        self.reads.append((rel, 0, len(data)))
        return data

    def open_read(self, rel: str) -> Any:
        return _CountingFile(self.inner.open_read(rel), rel, self.reads)


class _CountingFile:
    def __init__(self, f: Any, rel: str, reads: list[tuple[str, int, int]]) -> None:
        self.f, self.rel, self.reads = f, rel, reads

    def seek(self, *args: Any) -> int:
        return self.f.seek(*args)

    def readinto(self, b: Any) -> int:
        at = self.f.tell()
        n = self.f.readinto(b)
        self.reads.append((self.rel, at, n or 0))
        return n

    def read(self, n: int = -1) -> bytes:
        at = self.f.tell()
        data = self.f.read(n)
        self.reads.append((self.rel, at, len(data)))
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "_CountingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def test_load_tensors_of_the_weights_reads_only_their_bytes(saved) -> None:
    root, _, want = saved
    m = _manifest(root, 2)
    pieces: dict[str, list[tuple[int, int]]] = {"model": [], "optim": []}
    for key, t in m.tensors.items():
        pieces.setdefault(parse_key(key)[1], []).extend((c.piece.offset, c.piece.offset + c.piece.length) for c in t.chunks)
    for key, p in m.values.items():
        pieces.setdefault(parse_key(key)[1], []).append((p.offset, p.offset + p.length))
    storage = CountingStorage(root)
    got = fito.load_tensors(storage, "model")
    assert _same(got, {k: v for k, v in want.items() if k.startswith("model.")}) == []
    (obj,) = m.objects  # one process saved: one object
    data = [(at, at + n) for rel, at, n in storage.reads if rel == obj.file and at >= HEADER.size]
    assert data and not [r for r in data for p in pieces["optim"] if r[0] < p[1] and p[0] < r[1]]  # no optimizer byte
    model_bytes = sum(b - a for a, b in pieces["model"])
    optim_bytes = sum(b - a for a, b in pieces["optim"])
    read = sum(b - a for a, b in data)
    assert optim_bytes > model_bytes and model_bytes <= read <= model_bytes + 2 * 1024 * len(pieces["model"])
    assert sum(n for rel, _, n in storage.reads if rel != obj.file) < 64 << 10  # the manifest; the log is SQLite's own


# ---------------------------------------------------------------- Hugging Face and bounded memory
@pytest.mark.slow
def test_from_pretrained_loads_a_tiny_gpt2_saved_through_fito_and_exported(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from a config: nothing is downloaded
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging
    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=101, n_positions=16, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 101, (2, 8))
    model(ids, labels=ids).loss.backward()
    opt.step()
    with fito.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"model": model, "optim": opt})
    out = tmp_path / "hf"
    assert main(["export", str(tmp_path / "ck"), str(out), "--only", "model"]) == 0
    config.save_pretrained(out)  # the config is the user's; fito exports tensors
    loaded = GPT2LMHeadModel.from_pretrained(out)
    want = model.state_dict()
    assert _same(dict(loaded.state_dict()), {k: v for k, v in want.items()}) == []
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


MEASURE = """
import json, sys, torch, fito
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) << 10
fito.load_tensors(sys.argv[2], "model")  # imports and first-use allocations, on a tiny checkpoint
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM, what ru_maxrss reports) to the current RSS: imports' peaks left out
before = status("VmHWM")
got = fito.load_tensors(sys.argv[1], "model")
peak = status("VmHWM")
print(json.dumps({"extra": peak - before, "bytes": sum(t.numel() * t.element_size() for t in got.values()),
                  "names": sorted(got)}))
"""


@pytest.mark.slow
def test_load_tensors_extra_memory_is_the_selected_tensors_not_a_second_copy(tmp_path: Path) -> None:
    """A 32 MiB weight with 64 MiB of AdamW moments: loading the weights costs their own bytes and a little
    more, measured in a fresh process (its peak RSS, reset just before the load, over the RSS then): no second copy, no moments."""
    import subprocess
    import sys
    torch.manual_seed(0)
    model = torch.nn.Embedding(4096, 2048)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.tensor([1, 2])).sum().backward()
    opt.step()
    with fito.Checkpointer(tmp_path / "big") as ck:
        ck.save(1, {"model": model, "optim": opt})
    with fito.Checkpointer(tmp_path / "tiny") as ck:
        ck.save(1, {"model": torch.nn.Linear(2, 2)})
    del model, opt
    run = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "big"), str(tmp_path / "tiny")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["names"] == ["model.weight"] and found["bytes"] == 32 << 20
    assert found["extra"] < found["bytes"] + (12 << 20), found  # a second copy would add another 32 MiB
