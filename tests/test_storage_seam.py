"""The Storage seam with no POSIX above it (issue 17): identity is a URL string, `list`/`delete` are the whole
listing-and-deleting vocabulary, GC is planned over prefixes, attempt ages come from the attempt's name."""
from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path

import torch

import fito
from fito.commit.retention import list_attempts
from fito.coord.sqlite import SqliteDecisionStore
from fito.protocol.layout import attempt_name
from fito.storage import LocalFS, ObjectInfo, Storage, open_storage, url_of


class _Upload(io.BytesIO):
    def __init__(self, owner: "MemStorage", key: str) -> None:
        super().__init__()
        self.owner, self.key = owner, key

    def close(self) -> None:
        if not self.closed:
            self.owner.objects[self.key] = (self.getvalue(), time.time())  # visible only once complete
        super().close()


class MemStorage:
    """Only the Storage protocol, in memory, as an object store has it: no directories, no `path`, no
    `entries`/`remove_dir`/`listdir`/`remove_tree`, no local root."""

    def __init__(self) -> None:
        self.url = "mem://bucket/run"
        self.objects: dict[str, tuple[bytes, float]] = {}

    def makedirs(self, rel: str) -> None:
        pass

    def create(self, rel: str) -> _Upload:
        if rel in self.objects:
            raise FileExistsError(rel)
        return _Upload(self, rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.create(rel) as f:
            f.write(data)

    def persist(self, rel: str) -> None:
        pass

    def read_bytes(self, rel: str, limit: int) -> bytes:
        data = self.objects[rel][0]
        assert len(data) <= limit
        return data

    def open_read(self, rel: str) -> io.BytesIO:
        return io.BytesIO(self.objects[rel][0])

    def size(self, rel: str) -> int:
        return len(self.objects[rel][0])

    def exists(self, rel: str) -> bool:
        return rel in self.objects

    def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for key in sorted(self.objects):
            if key.startswith(base):
                yield ObjectInfo(key, len(self.objects[key][0]), self.objects[key][1])

    def delete(self, rel: str) -> None:
        for key in [k for k in self.objects if k == rel or k.startswith(rel.rstrip("/") + "/")]:
            del self.objects[key]


def test_a_storage_with_only_the_protocol_honours_keep_without_a_warning(tmp_path: Path, caplog) -> None:
    storage = MemStorage()
    assert isinstance(storage, Storage)
    ck = fito.Checkpointer(storage, keep=2, store=SqliteDecisionStore(tmp_path / "log.sqlite"))
    assert ck.root == "mem://bucket/run"
    with caplog.at_level(logging.WARNING, logger="fito"):
        for step in (1, 2, 3):
            ck.save(step, {"w": torch.full((64,), float(step))})
    assert ck.committed() == [2, 3]
    steps = sorted({k.split("/")[1] for k in storage.objects if k.startswith("epochs/")})
    assert steps == ["000000000002", "000000000003"]  # step 1 deleted by keep=2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    out = {"w": torch.zeros(64)}
    assert ck.restore(out) == 3 and out["w"].eq(3).all()
    ck.close()


def test_gc_ages_attempts_by_the_time_in_their_name_not_the_store_clock(tmp_path: Path) -> None:
    now = time.time()
    fs = LocalFS(tmp_path / "ck")
    old = attempt_name(1, "0123456789ab", int((now - 7200) * 1000), "00000001")
    new = attempt_name(1, "0123456789ab", int(now * 1000), "00000002")
    for name, mtime in ((old, now), (new, now - 7200)):  # each name says the opposite of its mtime
        fs.makedirs(f"epochs/000000000001/{name}")
        fs.write_bytes(f"epochs/000000000001/{name}/rank-00000.fito", b"x")
        os.utime(fs.root / "epochs/000000000001" / name, (mtime, mtime))
    mem = MemStorage()
    for name in (old, new):
        mem.write_bytes(f"epochs/000000000001/{name}/rank-00000.fito", b"x")
    for storage in (fs, mem):
        ages = {e.path.rpartition("/")[2]: e.age for e in list_attempts(storage, now=now)}
        assert abs(ages[old] - 7200) < 2 and abs(ages[new]) < 2, (storage, ages)
        assert "000000000001" in ages  # the step prefix is listed as a directory on both


def test_identity_is_a_url_string_and_a_local_root_keeps_its_plain_path(tmp_path: Path) -> None:
    fs = LocalFS(tmp_path / "a")
    assert fs.url == str((tmp_path / "a").absolute()) and isinstance(fs.root, Path)
    same = open_storage(f"file://{tmp_path / 'a'}")
    assert isinstance(same, LocalFS) and same.url == fs.url
    assert url_of(tmp_path / "a") == fs.url == url_of(f"file://{tmp_path / 'a'}")
    assert url_of("s3://bucket/run/") == "s3://bucket/run"
    ck = fito.Checkpointer(tmp_path / "a")
    assert ck.root == fs.url and isinstance(ck.root, str)
    ck.close()


def test_listing_and_deleting_a_local_root_through_the_protocol(tmp_path: Path) -> None:
    fs = LocalFS(tmp_path)
    fs.makedirs("epochs/000000000001/a")
    fs.write_bytes("epochs/000000000001/a/x", b"12345")
    fs.write_bytes("top", b"1")
    (tmp_path / "epochs" / "latest").symlink_to(tmp_path / "epochs" / "000000000001")
    got = {o.key: o.size for o in fs.list("epochs")}
    assert got == {"epochs/000000000001/a/x": 5, "epochs/latest": len(os.readlink(tmp_path / "epochs" / "latest"))}
    fs.delete("epochs/latest")  # the link is unlinked, its target untouched
    assert (tmp_path / "epochs/000000000001/a/x").exists() and not (tmp_path / "epochs/latest").is_symlink()
    fs.delete("epochs/000000000001")  # a prefix: everything under it
    fs.delete("epochs/000000000001")  # gone already is fine
    assert [o.key for o in fs.list()] == ["top"]
