"""Reading a committed root that is linked, unreadable, hostile-but-consistent (every hash recomputed) or
absurdly sized: every failure is a FitoError naming the file, in bounded memory, the caller's state is
untouched, `fallback=True` moves to the previous committed step, and `fito verify` says so in one line.
Also: what restore hands to user code is owned, contiguous, ordinary tensors and arrays, never views."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import fito
from fito.format.hashing import digest
from fito.ckpt.inspect import open_store
from fito.ckpt.shard import write_shard
from fito.cli import main
from fito.storage.localfs import LocalFS
from fito.testing.v1_format import save_v1
from training_state import assert_same, make_state, snapshot, train_steps
from fito.protocol.layout import attempt_dir

GIB = 1 << 30


# ------------------------------------------------------------------ a root with steps 2 and 4
def _root(tmp_path: Path, v1: bool) -> tuple[Path, dict[str, Any]]:
    state = make_state(0)
    with fito.Checkpointer(tmp_path) as ck:
        save = (lambda step, s: save_v1(ck, step, s)) if v1 else ck.save
        train_steps(state, 2)
        save(2, state)
        at2 = snapshot(state)
        train_steps(state, 2)
        save(4, state)
    return tmp_path, at2


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A root with committed steps 2 and 4, and the snapshot of the state as saved at step 2."""
    return _root(tmp_path, v1=False)


@pytest.fixture
def saved_v1(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The same in the per-rank format (fito-manifest/1), which restore still reads: the forgeries below
    rewrite that format's manifest and units."""
    return _root(tmp_path, v1=True)


def _attempt(root: Path, step: int) -> Path:
    _, store = open_store(root)
    d = [d for d in store.committed() if d.epoch == step][-1]
    store.close()
    return root / attempt_dir(step, d.attempt)


def _set_manifest(root: Path, step: int, raw: bytes) -> None:
    """Replace step's manifest and make the decision vouch for its exact bytes (a hostile but consistent root)."""
    (_attempt(root, step) / "manifest.json").write_bytes(raw)
    db = sqlite3.connect(root / "decisions.sqlite")
    with db:
        db.execute("UPDATE decisions SET manifest_hash = ? WHERE epoch = ?", (digest("xxh3-128", raw), step))
    db.close()


def _edit_manifest(root: Path, step: int, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((_attempt(root, step) / "manifest.json").read_bytes())
    edit(doc)
    _set_manifest(root, step, json.dumps(doc).encode())


def _edit_units(root: Path, step: int, edit: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> None:
    """Rewrite rank 0's shard from edited unit payloads with fito's own writer: headers, hashes, the manifest
    and its decision hash all consistent with the new bytes."""
    adir = _attempt(root, step)
    doc = json.loads((adir / "manifest.json").read_bytes())
    shard = adir / "rank-00000.fito"
    data = shard.read_bytes()
    units = edit([(name, data[off + 64:off + length]) for name, off, length, _, _ in doc["ranks"][0]["units"]])
    shard.unlink()
    written = write_shard(LocalFS(root), shard.relative_to(root).as_posix(), epoch=step, rank=0,
                          units=[(n, memoryview(p)) for n, p in units], algorithm=doc["hash"])
    doc["ranks"][0]["size"] = written.size
    doc["ranks"][0]["units"] = [[u.name, u.offset, u.length, u.hash, u.epoch] for u in written.units]
    _set_manifest(root, step, json.dumps(doc).encode())


def _edit_state_raw(root: Path, step: int, edit: Callable[[bytes], bytes],
                    payloads: dict[str, bytes] | None = None) -> None:
    def go(units: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        return [(n, edit(p) if n == "__state__" else (payloads or {}).get(n, p)) for n, p in units]
    _edit_units(root, step, go)


def _edit_extra_spec(**spec: Any) -> Callable[[bytes], bytes]:
    """Change the dtype/shape the state tree records for the `extra` tensor."""
    def edit(raw: bytes) -> bytes:
        doc = json.loads(raw)
        doc["tree"]["d"]["extra"]["d"]["data"].update(spec)
        return json.dumps(doc).encode()
    return edit


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# ------------------------------------------------------------------ the cases (each damages step 4 only)
def link_shard_inside_root(root: Path) -> None:
    shard = _attempt(root, 4) / "rank-00000.fito"
    shard.rename(shard.with_name("real.fito"))
    shard.symlink_to("real.fito")  # points inside the root, at the right bytes: still refused


def link_manifest_inside_root(root: Path) -> None:
    m = _attempt(root, 4) / "manifest.json"
    m.rename(m.with_name("real.json"))
    m.symlink_to("real.json")


def link_attempt_dir_inside_root(root: Path) -> None:
    adir = _attempt(root, 4)
    adir.rename(root / "elsewhere")
    adir.symlink_to(root / "elsewhere")


def shard_is_a_fifo(root: Path) -> None:
    shard = _attempt(root, 4) / "rank-00000.fito"
    shard.unlink()
    os.mkfifo(shard)  # opening it for reading must not hang


def shard_is_a_directory(root: Path) -> None:
    shard = _attempt(root, 4) / "rank-00000.fito"
    shard.unlink()
    shard.mkdir()


def manifest_deeply_nested(root: Path) -> None:
    raw = (_attempt(root, 4) / "manifest.json").read_bytes()
    _set_manifest(root, 4, raw[:-1] + f',"x":{_deep(100_000)}}}'.encode())


def state_deeply_nested_json(root: Path) -> None:
    _edit_state_raw(root, 4, lambda raw: raw[:-1] + f',"x":{_deep(100_000)}}}'.encode())


def state_deeply_nested_tree(root: Path) -> None:
    """Shallow enough for json to parse, deep enough for any recursive walk of the tree."""
    deep = '{"l":[' * 480 + '{"v":1}' + "]}" * 480
    _edit_state_raw(root, 4, lambda raw: raw.replace(b'"meta":{"d":{"kind":{"v":"value"},"data":',
                                                     b'"meta":{"d":{"kind":{"v":"value"},"data":' + deep.encode() + b',"was":', 1))


def manifest_world_size_bool(root: Path) -> None:
    _edit_manifest(root, 4, lambda d: d.update(world_size=True))


def manifest_rank_bool(root: Path) -> None:
    _edit_manifest(root, 4, lambda d: d["ranks"][0].update(rank=False))


def manifest_hash_unhashable(root: Path) -> None:
    _edit_manifest(root, 4, lambda d: d.update(hash=["xxh3-128"]))


def manifest_rank_entry_a_string(root: Path) -> None:
    _edit_manifest(root, 4, lambda d: d.update(ranks=["rank-00000.fito"]))


def manifest_unit_offset_bool(root: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["ranks"][0]["units"][0][1] = False
    _edit_manifest(root, 4, edit)


def shape_product_wraps_int64(root: Path) -> None:
    # np.prod of this shape wraps to 3 in int64: exactly the 3 bfloat16 values the unit holds.
    _edit_state_raw(root, 4, _edit_extra_spec(shape=[3, 2**63 - 1, 2**63 - 1]))


def empty_shape_overflowing_strides(root: Path) -> None:
    _edit_state_raw(root, 4, _edit_extra_spec(shape=[0, 2**62, 2**62]), payloads={"extra": b""})


def shape_with_bool_dims(root: Path) -> None:
    _edit_state_raw(root, 4, _edit_extra_spec(shape=[True, 3]))


def _last_unit_declared(root: Path, nbytes: int, *, header_agrees: bool) -> None:
    """The manifest (hash recomputed) declares `nbytes` for the shard's last unit; the shard is extended
    (sparse) so its real size matches. With `header_agrees` the unit's header claims the same length."""
    adir = _attempt(root, 4)
    shard = adir / "rank-00000.fito"
    doc = json.loads((adir / "manifest.json").read_bytes())
    unit = doc["ranks"][0]["units"][-1]
    assert unit[0] == "extra"
    unit[2] = 64 + nbytes
    doc["ranks"][0]["size"] = unit[1] + unit[2]
    os.truncate(shard, unit[1] + unit[2])
    if header_agrees:
        with open(shard, "r+b") as f:
            f.seek(unit[1] + 24)  # payload-length field of the FITOUNT1 header
            f.write(struct.pack("<Q", nbytes))
    _set_manifest(root, 4, json.dumps(doc).encode())


def huge_unit_header_disagrees(root: Path) -> None:
    """Manifest and state tree agree on a 3 GiB tensor; the unit's own header says 6 bytes."""
    _edit_state_raw(root, 4, _edit_extra_spec(shape=[3 * GIB // 2]))
    _last_unit_declared(root, 3 * GIB, header_agrees=False)


def huge_unit_spec_disagrees(root: Path) -> None:
    """Manifest and header agree on 3 GiB; the state tree says the tensor is 3 bfloat16 values."""
    _last_unit_declared(root, 3 * GIB, header_agrees=True)


def huge_state_unit(root: Path) -> None:
    adir = _attempt(root, 4)
    doc = json.loads((adir / "manifest.json").read_bytes())
    first, last = doc["ranks"][0]["units"][0], doc["ranks"][0]["units"][-1]
    size = last[1] + 4 * GIB
    first[2] = size - first[1]  # the state tree claims the whole (sparse) shard
    doc["ranks"][0]["units"] = [first]
    doc["ranks"][0]["size"] = size
    os.truncate(adir / "rank-00000.fito", size)
    _set_manifest(root, 4, json.dumps(doc).encode())


CASES: list[tuple[Callable[[Path], None], type, str]] = [
    (link_shard_inside_root, fito.UnsafeCheckpointError, r"rank-00000\.fito: expected .*no symbolic links.*'real\.fito'"),
    (link_manifest_inside_root, fito.UnsafeCheckpointError, r"manifest\.json: expected .*no symbolic links"),
    (link_attempt_dir_inside_root, fito.UnsafeCheckpointError, r"symbolic link to '.*elsewhere'"),
    (shard_is_a_fifo, fito.UnsafeCheckpointError, "expected a regular file, found a FIFO"),
    (shard_is_a_directory, fito.UnsafeCheckpointError, "expected a regular file, found a directory"),
    (manifest_deeply_nested, fito.UnsafeCheckpointError, r"manifest\.json: expected a manifest of bounded depth"),
    (state_deeply_nested_json, fito.UnsafeCheckpointError, "'__state__'.*bounded depth"),
    (state_deeply_nested_tree, fito.UnsafeCheckpointError, r"'__state__' in .*rank-00000\.fito: expected .*(bounded depth|levels of nesting)"),
    (manifest_world_size_bool, fito.UnsafeCheckpointError, "world_size True"),
    (manifest_rank_bool, fito.UnsafeCheckpointError, "rank entry 0"),
    (manifest_hash_unhashable, fito.UnsafeCheckpointError, r"hash algorithm in .*\['xxh3-128'\]"),
    (manifest_rank_entry_a_string, fito.UnsafeCheckpointError, "rank entry 0"),
    (manifest_unit_offset_bool, fito.UnsafeCheckpointError, r"a unit \[name, offset, length"),
    (shape_product_wraps_int64, fito.UnsafeCheckpointError, r"rank-00000\.fito: expected a shape of at most"),
    (empty_shape_overflowing_strides, fito.UnsafeCheckpointError, r"rank-00000\.fito: expected a shape of at most"),
    (shape_with_bool_dims, fito.UnsafeCheckpointError, r"rank-00000\.fito: expected a shape of .*\[True, 3\]"),
    (huge_unit_header_disagrees, fito.CheckpointCorruptError, r"expected payload length 3221225472, found payload length"),
    (huge_unit_spec_disagrees, fito.UnsafeCheckpointError, r"expected 6 bytes for bfloat16\[3\], found 3221225472 bytes declared"),
    (huge_state_unit, fito.UnsafeCheckpointError, r"'__state__'.*expected at most 1073741824 bytes"),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize("damage,error,match", CASES, ids=IDS)
def test_refused_untouched_then_fallback(saved_v1, damage, error, match):
    root, at2 = saved_v1
    damage(root)
    target = make_state(9)
    before = snapshot(target)
    with fito.Checkpointer(root) as ck:
        with pytest.raises(error, match=match):
            ck.restore(target)
        assert_same(before, snapshot(target))  # nothing was copied in
        assert ck.restore(target, fallback=True) == 2
    assert_same(at2, snapshot(target))


@pytest.mark.parametrize("damage", [c[0] for c in CASES], ids=IDS)
def test_fito_verify_reports_one_line_exit_1(saved_v1, damage, capsys):
    root, _ = saved_v1
    damage(root)
    assert main(["verify", str(root)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1 and "epochs/000000000004/" in lines[0], lines
    assert "Traceback" not in captured.out + captured.err


def test_fito_verify_process_on_a_linked_shard(saved):
    root, _ = saved
    link_shard_inside_root(root)
    proc = subprocess.run([sys.executable, "-m", "fito", "verify", str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "symbolic link" in lines[0], lines
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ unreadable files (EACCES)
UNREADABLE_CHILD = textwrap.dedent("""
    import sys, json
    sys.path.insert(0, sys.argv[2])
    import fito
    from training_state import make_state, snapshot, assert_same
    from fito.ckpt.inspect import verify
    target = make_state(9)
    before = snapshot(target)
    with fito.Checkpointer(sys.argv[1]) as ck:
        try:
            ck.restore(target)
            out = {"error": None}
        except Exception as exc:
            out = {"error": type(exc).__name__, "message": str(exc)}
        assert_same(before, snapshot(target))
        out["fallback"] = ck.restore(target, fallback=True)
    out["verify"] = verify(sys.argv[1]).errors
    print(json.dumps(out))
""")


@pytest.mark.parametrize("name", ["rank-00000.fito", "manifest.json"])
def test_unreadable_file_is_a_fito_error_and_falls_back(saved, name):
    root, _ = saved
    (_attempt(root, 4) / name).chmod(0)
    cmd = [sys.executable, "-c", UNREADABLE_CHILD, str(root), str(Path(__file__).parent)]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that bypass file permissions
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["error"] == "CheckpointUnreadableError", out
    assert name in out["message"] and "Permission denied (EACCES)" in out["message"]
    assert out["fallback"] == 2
    assert len(out["verify"]) == 1 and "EACCES" in out["verify"][0]


# ------------------------------------------------------------------ bounded memory on absurd sizes
# Peak resident memory of this process from here on: ru_maxrss is useless in a child (Linux carries the
# parent's high-water mark across fork and exec); writing 5 to clear_refs resets VmHWM to the current RSS.
PEAK = textwrap.dedent("""
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])  # KiB

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS")

    def peak_since(base):
        return status("VmHWM") - base
""")

MEMORY_CHILD = PEAK + textwrap.dedent("""
    import sys, json
    sys.path.insert(0, sys.argv[1])
    import fito
    from fito.ckpt.inspect import verify
    from training_state import make_state
    target = make_state(9)
    out = {}
    for root in sys.argv[2:]:
        base = reset_peak()
        with fito.Checkpointer(root) as ck:
            try:
                ck.restore(target)
                error = None
            except fito.FitoError as exc:
                error = type(exc).__name__
        errors = verify(root).errors
        out[root] = {"error": error, "verify_errors": len(errors),
                     "peak_kib": peak_since(base)}
    print(json.dumps(out))
""")


def test_absurd_declared_sizes_are_refused_in_bounded_memory(tmp_path):
    roots = []
    for damage in (huge_unit_header_disagrees, huge_unit_spec_disagrees, huge_state_unit):
        root = tmp_path / damage.__name__
        state = make_state(0)
        with fito.Checkpointer(root) as ck:  # the damages rewrite units of the per-rank format
            save_v1(ck, 2, state)
            save_v1(ck, 4, state)
        damage(root)
        roots.append(str(root))
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(Path(__file__).parent), *roots],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for root, r in json.loads(proc.stdout.splitlines()[-1]).items():
        assert r["error"] is not None and r["verify_errors"] == 1, (root, r)
        assert r["peak_kib"] < 128 << 10, (root, r)  # a 3-4 GiB declaration costs well under 128 MiB


VERIFY_CHILD = PEAK + textwrap.dedent("""
    import sys
    from fito.ckpt.inspect import verify
    base = reset_peak()
    report = verify(sys.argv[1])
    assert report.whole, report.errors
    print(peak_since(base))
""")


def test_verify_holds_a_few_units_not_the_shard(tmp_path):
    with fito.Checkpointer(tmp_path) as ck:
        ck.save(1, {"w": [torch.full((4 << 20,), float(i)) for i in range(24)]})  # 24 units of 16 MiB
    proc = subprocess.run([sys.executable, "-c", VERIFY_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) < 160 << 10  # KiB: well under the 384 MiB shard


# ------------------------------------------------------------------ item 7: owned tensors
class Recorder:
    """A user object that keeps what load_state_dict hands it, and feeds a generator state to set_state."""

    def __init__(self) -> None:
        self.gen = torch.Generator().manual_seed(1234)
        torch.rand(5, generator=self.gen)
        self.tensors = {"one": torch.tensor([7.0]), "int": torch.arange(10), "bool": torch.tensor([True, False]),
                        "half": torch.ones(2, 3, dtype=torch.bfloat16), "empty": torch.zeros(0, 4), "scalar": torch.tensor(3)}
        self.received: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), **self.tensors}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.received = dict(sd)
        self.gen.set_state(sd["gen"])  # no clone: torch reads the raw storage from its start


def _owned(t: Any) -> bool:
    return (type(t) is torch.Tensor and t.is_contiguous() and t.storage_offset() == 0 and t._base is None
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


def test_restore_hands_user_code_owned_contiguous_tensors(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    rec = Recorder()
    arrays = {"a": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.array(2.5)}
    expected_stream = torch.rand(4, generator=rec.gen.clone_state())
    with fito.Checkpointer(tmp_path) as ck:
        ck.save(1, {"model": model, "optim": opt, "rec": rec, "arrays": arrays, "rng": fito.RNGState()})

    torch.manual_seed(5)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    opt2 = torch.optim.AdamW(model2.parameters())
    rec2 = Recorder()
    rec2.gen.manual_seed(99)
    state = {"model": model2, "optim": opt2, "rec": rec2, "arrays": None, "rng": fito.RNGState()}
    with fito.Checkpointer(tmp_path) as ck:
        assert ck.restore(state) == 1

    assert torch.equal(torch.rand(4, generator=rec2.gen), expected_stream)  # set_state took the restored tensor as is
    for key, t in rec2.received.items():
        assert _owned(t), key
        assert torch.equal(t, rec.gen.get_state() if key == "gen" else rec.tensors[key]) or key == "gen"
    for i, s in opt2.state.items():
        for key, t in s.items():
            assert _owned(t), (i, key)  # AdamW keeps the restored tensors as its moments
    for key, t in model2.state_dict().items():
        assert torch.equal(t, model.state_dict()[key])
    for key, a in state["arrays"].items():
        assert a.flags.owndata and a.flags.c_contiguous and a.base is None, key
        assert a.dtype == arrays[key].dtype and np.array_equal(a, arrays[key])


def test_localfs_exists_and_listdir_follow_no_link(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "f").write_bytes(b"x")
    fs = LocalFS(tmp_path / "root")
    fs.makedirs("epochs/1")
    (fs.root / "epochs" / "linked").symlink_to(outside)  # a directory link, pointing out of the root
    (fs.root / "epochs" / "dangling").symlink_to(tmp_path / "nowhere")
    assert fs.exists("epochs/linked") and fs.exists("epochs/dangling")  # there, as links
    assert fs.exists("epochs/linked/f")  # reported at the link; a read of it is refused, naming the link
    assert not fs.exists("epochs/missing") and not fs.exists("epochs/1/missing")
    assert fs.listdir("epochs") == ["1", "dangling", "linked"]
    with pytest.raises(fito.UnsafeCheckpointError, match="link"):
        fs.listdir("epochs/linked")  # never the contents of what it points to
    with pytest.raises(fito.FitoError):
        fs.open_read("epochs/linked/f")
    assert fs.listdir("epochs/1") == [] and fs.listdir("nothing") == []
