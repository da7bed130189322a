"""benchmarks/gpu.py, the prepared GPU check, runs end to end as a CPU dry run (`--device cpu`): a save and
restore of a model + AdamW, sync and async, each restore bit-exact, beside DCP's save, load and async_save
with a DefaultStager. The CUDA run itself needs a GPU machine (docs/torch_versions.md); this keeps the
script from rotting in between. The wheel install step (--wheels) is not run here: it needs
benchmarks/gpu_prepare.sh's downloads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def test_gpu_script_dry_run_on_cpu_is_bit_exact_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--gb", "0.01",
                           "--dir", str(tmp_path / "ck"), "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["failures"] == [] and "bit-exact: every restore" in proc.stdout
    rows = set(result["seconds"])
    for label in ("cold", "warm"):
        assert {f"fito async stall ({label})", f"DCP async stall ({label})"} <= rows
    assert {"fito save (sync)", "fito restore", "DCP save (sync)", "DCP load"} <= rows
