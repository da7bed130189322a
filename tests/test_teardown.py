"""A rank must not abort at exit after its work is done. fito's own gloo groups are destroyed by close() (their
worker threads joined then, not at interpreter exit, where a worker still letting go of a finished collective
takes the GIL inside a C++ destructor and the process dies of SIGABRT: "terminate called without an active
exception"); and run_ranks says so plainly when a rank dies of a signal after printing its result."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fito.testing.dist import run_ranks

pytestmark = pytest.mark.multiproc
HELPERS = Path(__file__).parent / "helpers"


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")
def test_close_destroys_the_groups_fito_created_and_leaves_a_callers_group_usable(tmp_path):
    results = run_ranks("close_rank", [str(tmp_path)], 2, timeout=240, path=[str(HELPERS)])
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
        line = json.loads(r.stdout.strip().splitlines()[-1])
        assert line["open"] > line["before"]  # the Checkpointer's own group runs gloo threads
        assert line["own"] > 0 and line["left"] == [], line  # close() joined them (not left to interpreter exit)
        assert line["after_close"] == "FitoError"  # not a collective on the default group instead
        assert line["manager_open"] > line["before"] and line["manager_own"] > 0 and line["manager_left"] == [], line
        assert line["caller_group_sum"] == 2.0  # a group the caller passed is not destroyed


def test_run_ranks_names_the_signal_of_a_rank_that_aborts_after_printing_its_result(tmp_path):
    (tmp_path / "abort_at_exit.py").write_text(
        "import atexit, json, os, sys\n"
        "print(json.dumps({'rank': int(os.environ['RANK'])}), flush=True)\n"
        "if os.environ['RANK'] == '1':\n"
        "    atexit.register(os.abort)  # dies at interpreter exit, after its result\n")
    r0, r1 = run_ranks("abort_at_exit", [], 2, timeout=60, path=[str(tmp_path)])
    assert r0.returncode == 0 and "[fito]" not in r0.stderr
    assert r1.returncode == -6
    assert "[fito] rank 1 died of SIGABRT (returncode -6) after printing 1 line(s) to stdout, the last: '{\"rank\": 1}'" in r1.stderr
