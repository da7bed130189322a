"""SIGKILL one rank of a 2-rank job at random moments of its sharded saves, several rounds: a fresh job on
the same world size (the next round's, which restores first) and on another (one process, here) restores
exactly one committed step, never a mix, and never loses a step whose save had returned."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fito
from fito.testing.dist import free_port

HERE = Path(__file__).parent
pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
ROUNDS = 4


def _start(root: Path) -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                   OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, "-m", "sharded_saver", str(root)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    return procs


def _restore_on_one_rank(root: Path) -> tuple[int, bool]:
    """Another world size: one process restores into plain tensors; rank 0's copy of the per-rank entry."""
    state = {"sharded": torch.full((1 << 18,), -1.0), "replicated": torch.full((1 << 17,), -1.0), "mine": None}
    step = fito.Checkpointer(root).restore(state, rank_local={0: 0})
    values = set(state["sharded"].unique().tolist()) | set(state["replicated"].unique().tolist())
    return step, values == {float(step)} and state["mine"] == {"step": step, "rank": 0}


def test_sigkill_of_one_rank_during_sharded_saves_never_yields_a_mix(tmp_path):
    rng = random.Random(20261125)
    acknowledged, restored = 0, 0
    for _ in range(ROUNDS):
        procs = _start(tmp_path)
        started = [p.stdout.readline().split() for p in procs]  # type: ignore[union-attr]
        for words in started:  # the fresh job on the same world size restored one whole step
            assert words[:1] == ["started"] and words[2] == "whole", started
            assert acknowledged <= int(words[1]) <= max(restored, acknowledged) + 1, (started, acknowledged)
        time.sleep(rng.uniform(0.1, 1.0))
        victim = rng.randrange(2)
        procs[victim].send_signal(signal.SIGKILL)
        try:
            procs[1 - victim].wait(timeout=60)  # the survivor loses its peer inside a collective and stops
        except subprocess.TimeoutExpired:
            procs[1 - victim].kill()
        out = procs[0].stdout.read()  # type: ignore[union-attr]
        for p in procs:
            p.wait()
        acks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")]
        acknowledged = max([acknowledged, *acks])
        step, ok = _restore_on_one_rank(tmp_path)
        assert ok, f"a mix after restoring step {step}"
        assert acknowledged <= step <= acknowledged + 1  # the save in flight may or may not have committed
        restored = step
    assert acknowledged > 0
