"""A manifest that claims a huge value or tensor (3 GiB, 64 GiB) inside an object whose real size agrees (a
sparse file) is refused before anything is allocated for it: CheckpointCorruptError naming the object and the
sizes, with a small peak RSS, under a 2 GiB address-space limit, through Checkpointer.restore and through
fito.dcp.Reader (issue 20 item 4; on the old code the 3 GiB value cost 3 GB and 64 GiB a bare RuntimeError)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a fresh process per case (torch import): ~6 s each

HELPER = Path(__file__).parent / "helpers" / "forged_size.py"
SMALL = 200 << 20  # peak RSS growth allowed for the refusal: far below any of the claims


def _run(root: Path, what: str, gib: float, via: str) -> dict:
    p = subprocess.run([sys.executable, str(HELPER), str(root), what, str(gib), via], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("via", ["ckpt", "dcp"])
@pytest.mark.parametrize("what,gib", [("value", 3), ("value", 64), ("tensor", 64)])
def test_a_forged_huge_length_is_refused_before_allocation(tmp_path, what, gib, via):
    out = _run(tmp_path / "root", what, gib, via)
    assert out["outcome"] != "restored", out
    assert out["corrupt"], f"not a CheckpointCorruptError: {out}"
    assert out["rss_growth"] < SMALL, out
    if what == "value":  # the value: refused by the read's size check, naming the object and both sizes
        assert out["object"] in out["message"] and str(gib * (1 << 30)) in out["message"], out
        assert str(64 << 20) in out["message"], out
