"""S3Storage (fito.storage.s3) against a real S3 server (SeaweedFS on 127.0.0.1)."""
from __future__ import annotations

import os

import pytest

from fito.errors import CheckpointCorruptError, UnsafeCheckpointError
from fito.storage import open_storage
from fito.storage.s3 import S3Storage

pytestmark = pytest.mark.s3


@pytest.fixture
def s3(seaweed) -> S3Storage:
    return S3Storage(seaweed.new_url(), storage_options=seaweed.options(), part_bytes=5 << 20)


def test_open_storage_takes_an_s3_url_configured_by_the_aws_environment(seaweed, monkeypatch) -> None:
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    url = seaweed.new_url()
    st = open_storage(url)
    assert isinstance(st, S3Storage) and st.url == url and st.root == url  # identity: the URL, no local path
    st.write_bytes("a/b.json", b"{}")
    assert open_storage(url + "/").read_bytes("a/b.json", 10) == b"{}"
    assert not os.path.exists("s3:")  # nothing was made beside the current directory
    with pytest.raises(ValueError, match="no storage for the scheme 'gs'"):
        open_storage("gs://bucket/x")


def test_multipart_upload_reads_back_by_ranges_and_lists_with_size_and_time(s3: S3Storage) -> None:
    body = bytes(range(256)) * (48 << 12)  # 12 MiB: three 5 MiB parts in parallel
    s3.makedirs("epochs/1/att")
    with s3.create("epochs/1/att/rank-0.fito") as f:
        for i in range(0, len(body), 1 << 20):
            f.write(memoryview(body)[i:i + (1 << 20)])
    s3.persist("epochs/1/att/rank-0.fito")
    assert s3.size("epochs/1/att/rank-0.fito") == len(body)
    with s3.open_read("epochs/1/att/rank-0.fito") as f:
        f.seek(7 << 20)
        piece = bytearray(1000)
        assert f.readinto(piece) == 1000 and bytes(piece) == body[7 << 20:(7 << 20) + 1000]
        assert f.fetched == 1000  # a ranged GET: only the bytes asked for
        f.seek(0)
        assert f.read() == body
    s3.write_bytes("epochs/1/att/manifest.json", b"{}")
    listed = s3.list("epochs/1")
    assert [(o.key, o.size) for o in listed] == [("epochs/1/att/manifest.json", 2), ("epochs/1/att/rank-0.fito", len(body))]
    assert all(o.mtime > 1.6e9 for o in listed)
    assert s3.listdir("epochs") == ["1"] and [e.kind for e in s3.entries("epochs/1")] == ["dir"]
    with pytest.raises(FileExistsError, match="exists already"):
        s3.create("epochs/1/att/manifest.json")  # never overwritten
    s3.remove_tree("epochs/1")
    assert s3.list("epochs") == [] and s3.listdir("epochs") == [] and s3.remove_dir("epochs/1")


def test_an_upload_that_fails_midway_leaves_no_visible_object(s3: S3Storage) -> None:
    with pytest.raises(RuntimeError, match="rank failed"):
        with s3.create("x/partial.fito") as f:
            f.write(bytes(12 << 20))  # two parts are uploaded already
            raise RuntimeError("rank failed")
    assert not s3.exists("x/partial.fito") and s3.list("x") == []


def test_missing_and_oversized_objects_are_refused_naming_the_object(s3: S3Storage) -> None:
    with pytest.raises(CheckpointCorruptError, match=r"s3://fito/.*/nope/m.json: expected an object written by fito, "
                                                   "found no such object"):
        s3.read_bytes("nope/m.json", 100)
    s3.write_bytes("big.json", bytes(1000))
    with pytest.raises(UnsafeCheckpointError, match="at most 100 bytes, found 1000 bytes"):
        s3.read_bytes("big.json", 100)
    with pytest.raises(UnsafeCheckpointError):
        s3.open_read("../escape")
    assert not s3.exists("nope/m.json")


_WRITER = """
import sys, time
from fito.storage.s3 import S3Storage
st = S3Storage(sys.argv[1], storage_options=dict(a.split("=", 1) for a in sys.argv[3:]), part_bytes=5 << 20)
f = st.create(sys.argv[2])
f.write(bytes(16 << 20))  # three parts handed to the upload, the fourth pending
time.sleep(0.5)
print("mid-upload", flush=True)
time.sleep(60)
"""


@pytest.mark.multiproc
def test_a_writer_sigkilled_mid_upload_leaves_no_visible_object(seaweed) -> None:
    import signal
    import subprocess
    import sys

    url = seaweed.new_url()
    opts = [f"{k}={v}" for k, v in seaweed.options().items()]
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, url, f"r{round_}.fito", *opts], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "mid-upload"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    st = S3Storage(url, storage_options=seaweed.options())
    assert st.list("") == [] and not st.exists("r0.fito")
