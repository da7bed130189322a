"""Servers started by tests die with the process that started them, even when it is SIGKILLed (a timed-out
CI run): fito.testing.tether, used by the etcd and SeaweedFS fixtures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]

_HOLDER = """
import json, sys, time
if sys.argv[1] == "etcd":
    from fito.testing.etcd import EtcdCluster
    server = EtcdCluster(size=1).start()
    pids = [m.proc.pid for m in server.members]
else:
    from fito.testing.s3server import SeaweedS3
    server = SeaweedS3().start()
    pids = [server.proc.pid]
print(json.dumps(pids), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("server", [pytest.param("etcd", marks=pytest.mark.etcd),
                                    pytest.param("seaweed", marks=pytest.mark.s3)])
def test_a_server_dies_with_the_process_that_started_it(server: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, server], stdout=subprocess.PIPE, text=True,
                              env={**os.environ})
    try:
        line = holder.stdout.readline() if holder.stdout else ""
        assert line, f"the holder process did not start its {server} server"
        pids = json.loads(line)
        assert pids and all(_running(p) for p in pids)
    finally:
        holder.send_signal(signal.SIGKILL)  # no atexit, no fixture teardown: only the tie can stop the server
        holder.wait()
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if _running(p)]
    for p in left:  # do not leak them if the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"{server} servers {left} outlived the SIGKILLed process that started them"
