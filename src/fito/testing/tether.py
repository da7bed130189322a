"""Servers started by tests die with the process that started them, even when it is SIGKILLed.

`tethered_popen` starts the child in its own process group (a Ctrl-C in the terminal reaches pytest, which
stops the server in order) and asks the kernel to SIGKILL it when the parent dies (Linux
`prctl(PR_SET_PDEATHSIG)`). Elsewhere a small watchdog process polls the parent and kills the server's group.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so start servers from a thread that
lives as long as the server (the main thread, as pytest fixtures do)."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

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
