"""`fito recover-log` (issue 9, item 1): rebuild a lost decision log from whole, fully verified attempts."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

import fito
from fito.cli import main
from fito.coord.sqlite import SqliteDecisionStore
from fito.protocol.layout import parse_attempt
from fito.storage.localfs import LocalFS

LOG = SqliteDecisionStore.FILENAME


def state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"model": {"w": torch.randn(64, generator=g), "b": torch.randn(3, generator=g).double()}, "step": step}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = (Path(dirpath) / name).lstat()
            out[(Path(dirpath) / name).relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


class ManifestWriteFails(LocalFS):
    """Storage whose manifest writes fail with ENOSPC: the coordinator aborts before its commit point."""

    def write_bytes(self, rel: str, data: bytes) -> None:
        if rel.endswith("manifest.json"):
            raise OSError(errno.ENOSPC, "No space left on device", rel)
        super().write_bytes(rel, data)


@pytest.fixture
def lost(ckdir: Path) -> Path:
    """Steps 1-3 committed, step 3's shard then damaged, an attempt of step 4 cut short; the log deleted."""
    with fito.Checkpointer(ckdir) as ck:
        for s in (1, 2, 3):
            ck.save(s, state(s))
    shard = next((ckdir / "epochs" / "000000000003").glob("*/rank-00000.fito"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a payload byte of model/w: only its content hash can tell
    shard.write_bytes(bytes(data))
    cut = ckdir / "epochs" / "000000000004" / next((ckdir / "epochs" / "000000000003").iterdir()).name.replace("f1-", "f7-", 1)
    cut.mkdir(parents=True)
    (cut / "rank-00000.fito").write_bytes(b"half a shard")
    (ckdir / LOG).unlink()
    return ckdir


def test_dry_run_lists_the_whole_steps_and_changes_nothing(lost, capsys):
    before = tree(lost)
    assert main(["recover-log", str(lost)]) == 0
    out = capsys.readouterr().out
    assert "step 1 would record" in out and "step 2 would record" in out and "step 3 would" not in out
    assert "000000000003" in out and "not whole" in out  # the damaged attempt is listed as skipped
    assert "no manifest" in out  # the cut-short one too
    assert "a restore would then return step 2" in out
    assert tree(lost) == before and not (lost / LOG).exists()


def test_apply_then_restore_is_bit_exact_and_the_next_save_keeps_it_until_a_newer_commit(lost, capsys):
    assert main(["recover-log", str(lost), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)["result"]
    assert [c["step"] for c in plan["chosen"]] == [1, 2] and plan["fence_floor"] == 7 and not plan["applied"]
    assert main(["recover-log", str(lost), "--apply"]) == 0
    store = SqliteDecisionStore(lost / LOG, readonly=True)
    assert store.current_fence() == 8 and [d.epoch for d in store.committed()] == [1, 2]  # fences above every name
    store.close()

    into = state(0)
    ck = fito.Checkpointer(lost, keep=1)
    assert ck.restore(into) == 2
    expected = state(2)
    assert torch.equal(into["model"]["w"], expected["model"]["w"]) and torch.equal(into["model"]["b"], expected["model"]["b"])
    assert into["step"] == 2

    recovered = {p.parent.name + "/" + p.name for p in (lost / "epochs").glob("*/*")}
    ck.storage = ManifestWriteFails(lost)
    with pytest.raises(fito.SaveAbortedError):
        ck.save(5, state(5))  # aborts before committing: retention never ran
    assert ck.committed() == [1, 2] and {p.parent.name + "/" + p.name for p in (lost / "epochs").glob("*/*")} >= recovered
    ck.storage = LocalFS(lost)
    ck.save(6, state(6))
    assert ck.committed() == [6]
    left = {p.parent.name + "/" + p.name for p in (lost / "epochs").glob("*/*")}
    assert not any(n.startswith(("000000000001/", "000000000002/")) for n in left)  # retired, then deleted
    # The lost log's leftovers carry its identity: the new log never deletes them by name.
    assert any(n.startswith("000000000003/") for n in left) and any(n.startswith("000000000004/") for n in left)
    newest = [parse_attempt(n.split("/")[1]) for n in left if n.startswith("000000000006/")]
    assert newest[0].fence == 9 and newest[0].log_id == SqliteDecisionStore(lost / LOG).log_id()
    ck.close()


def test_recover_log_refuses_when_a_log_exists(ckdir, capsys):
    with fito.Checkpointer(ckdir) as ck:
        ck.save(1, state(1))
    before = (ckdir / LOG).read_bytes()
    assert main(["recover-log", str(ckdir), "--apply"]) == 4
    err = capsys.readouterr().err
    assert "never replaces one" in err and len(err.strip().splitlines()) == 1
    assert (ckdir / LOG).read_bytes() == before


def test_nothing_whole_to_recover_exits_3_and_writes_nothing(ckdir, capsys):
    (ckdir / "epochs" / "000000000001" / "f1-0123456789ab-1-00000002").mkdir(parents=True)
    assert main(["recover-log", str(ckdir), "--apply"]) == 3
    assert "nothing to recover" in capsys.readouterr().err and not (ckdir / LOG).exists()
