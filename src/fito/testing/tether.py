"""Servers started by tests die with the process that started them, even when it is SIGKILLed.

`tethered_popen` starts the child in its own process group (a Ctrl-C in the terminal reaches pytest, which
stops the server in order) and asks the kernel to SIGKILL it when the parent dies (Linux
`prctl(PR_SET_PDEATHSIG)`). Elsewhere a small watchdog process polls the parent and kills the server's group.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so start servers from a thread that
lives as long as the server (the main thread, as pytest fixtures do).

`stop_processes` stops servers by PID (never by name) with a grace period; `LiveServers` is a registry of
running servers that stops the leftovers at interpreter exit (a crashed test must not leave servers running)."""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Protocol

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """preexec_fn: runs in the child between fork and exec. Only async-signal-safe work here."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(121)
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(122)


_WATCHDOG = """
import os, signal, sys, time
parent, child = int(sys.argv[1]), int(sys.argv[2])
while True:
    try:
        os.kill(child, 0)
    except OSError:
        sys.exit(0)
    if os.getppid() != parent:
        try:
            os.killpg(child, signal.SIGKILL)
        except OSError:
            pass
        sys.exit(0)
    time.sleep(0.5)
"""


def tethered_popen(args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen(args, ...) in a new session, killed by the kernel (or a watchdog) if we die."""
    parent = os.getpid()
    if sys.platform.startswith("linux"):
        return subprocess.Popen(args, start_new_session=True, preexec_fn=lambda: _die_with(parent), **kwargs)
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(parent), str(proc.pid)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc


def stop_processes(procs: Sequence[subprocess.Popen | None], grace: float) -> None:
    """SIGTERM every live process by its PID, then give each `grace` seconds to exit before SIGKILL."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        if proc is None:
            continue
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class LiveServers:
    """The servers of one kind still running; whatever is left at interpreter exit is stopped."""

    def __init__(self) -> None:
        self._servers: list[_Stoppable] = []
        atexit.register(self.stop_all)

    def add(self, server: _Stoppable) -> None:
        self._servers.append(server)

    def discard(self, server: _Stoppable) -> None:
        if server in self._servers:
            self._servers.remove(server)

    def __contains__(self, server: object) -> bool:
        return server in self._servers

    def stop_all(self) -> None:
        for server in list(self._servers):
            server.stop()
