"""The command line's contract (one exit-code table, one JSON envelope, one-line errors, help for every
option, `--version`) for every command, plus inspect, verify, gc and the README's main job `fito demo`."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fito
from fito.cli import build_parser, main
from fito.commands._contract import DISTRIBUTION, EXIT_CODES

README = Path(__file__).parent.parent / "README.md"
PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def _saved(root: Path) -> None:
    ck = fito.Checkpointer(root)
    for step in (1, 2, 3):
        ck.save(step, {"w": torch.full((1000,), float(step))})


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _envelope(text: str, command: str) -> dict:
    env = json.loads(text)  # the whole of stdout is one JSON document
    assert set(env) == {"command", "version", "verdict", "exit_code", "result"}, env.keys()
    assert env["command"] == command and env["version"] == fito.__version__
    assert env["verdict"] in ("ok", "holds", "violated", "unknown", "error")
    return env


def _one_line_error(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fito {command}: error: ") and "Traceback" not in err
    return lines[0]


# ---- the contract, command by command ------------------------------------------------------------------
# Small, fast arguments for each command; the test below fails if a command is added without a case here.
FAST = {
    "inspect": ["{dir}"],
    "verify": ["{dir}"],
    "gc": ["{dir}", "--keep", "2", "--grace", "0"],
    "recover-log": ["{dir}"],  # run after the log is deleted (below): a dry run
    "export": ["{dir}", "{dir}-exported"],
    "check": ["--protocol", "bilateral", "--ranks", "1"],
    "lattice": ["--n", "100"],
    "units": [],
    "adversary": ["--n", "2"],
    "skew": ["--seeds", "1", "--restore-step", "20", "--v-lag", "10", "--data-lag", "5", "--horizon", "5"],
    "fleet": ["--nodes", "4", "--runs", "5", "--loss", "0.1"],
    "retry": ["--steps", "60", "--policy", "fito"],
    "demo": ["--steps", "15", "--every", "5", "--kill-step", "10"],
}
VERDICT = {"inspect": "ok", "verify": "holds", "gc": "ok", "recover-log": "ok", "export": "ok", "check": "holds", "lattice": "ok", "units": "ok",
           "adversary": "violated", "skew": "ok", "fleet": "ok", "retry": "holds", "demo": "holds"}


def test_every_command_has_a_fast_contract_case() -> None:
    assert set(FAST) == set(_commands()) == set(VERDICT)


@pytest.mark.parametrize("command", [pytest.param(c, marks=[pytest.mark.slow, pytest.mark.multiproc])
                                     if c == "demo" else c for c in FAST])
def test_json_envelope_and_exit_code(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _saved(tmp_path / "ck")
    if command == "recover-log":
        (tmp_path / "ck" / "decisions.sqlite").unlink()  # it only rebuilds a lost log
    argv = [command, *(a.format(dir=tmp_path / "ck") for a in FAST[command]), "--json"]
    if command == "demo":
        argv += ["--dir", str(tmp_path / "demo")]
    code = main(argv)
    out = capsys.readouterr().out
    env = _envelope(out, command)
    assert env["verdict"] == VERDICT[command]
    assert code == env["exit_code"] == {"ok": 0, "holds": 0, "violated": 1}[VERDICT[command]]
    assert env["result"] is not None


def test_version_prints_the_distribution_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    # and the torch beside it: pyproject.toml accepts a range, so a bug report must say which one ran
    assert capsys.readouterr().out.strip() == f"{DISTRIBUTION} {fito.__version__} (torch {torch.__version__})"
    assert f'name = "{DISTRIBUTION}"' in PYPROJECT.read_text()


def test_every_option_has_help() -> None:
    missing = []
    for name, parser in {"fito": build_parser(), **_commands()}.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help text: {missing}"


def test_readme_documents_the_exit_code_table() -> None:
    text = README.read_text()
    rows = dict(re.findall(r"^\| (\d) \| `?(\w[\w ]*?)`? \|", text, flags=re.M))
    assert {int(k) for k in rows} == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        assert rows[str(code)] == meaning.split(":")[0]


# ---- bad input: the documented exit code, one line on stderr, never a traceback ------------------------
BAD = [
    (["bogus"], 2),
    (["lattice", "--n", "many"], 2),
    (["lattice", "--p", "2"], 2),
    (["lattice", "--ternary", "1,2"], 2),
    (["units", "--tp", "0"], 2),
    (["adversary", "--n", "1"], 2),
    (["check", "--ranks", "0"], 2),
    (["check", "--protocol", "naive", "--mutation", "ready-before-fsync"], 2),
    (["fleet", "--loss", "1.0"], 2),
    (["fleet", "--loss", "a,b"], 2),
    (["retry", "--jobs", "0"], 2),
    (["skew", "--seeds", "0"], 2),
    (["demo", "--kill-step", "7"], 2),
    (["demo", "--every", "5", "--kill-step", "5"], 2),  # nothing committed before the kill to resume from
    (["gc", "{dir}", "--keep", "0"], 2),
    (["gc", "{missing}", "--keep", "1"], 3),
    (["verify", "{missing}"], 3),
    (["verify", "{empty}"], 3),
    (["verify", "{dir}", "--step", "7"], 3),
    (["inspect", "{missing}"], 3),
    (["inspect", "{broken}"], 4),
    (["recover-log", "{dir}"], 4),  # a log exists: never replaced
    (["recover-log", "{missing}"], 3),
    (["verify", "{broken}"], 4),
]


@pytest.mark.parametrize(("argv", "code"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_gives_the_documented_exit_code(argv: list[str], code: int, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _saved(tmp_path / "ck")
    (tmp_path / "empty").mkdir()
    _saved(tmp_path / "broken")
    for log in (tmp_path / "broken").glob("decisions.sqlite*"):  # the database and its WAL
        log.write_bytes(b"this is not a database " * 100)
    paths = {"dir": tmp_path / "ck", "missing": tmp_path / "nope", "empty": tmp_path / "empty",
             "broken": tmp_path / "broken"}
    args = [a.format(**paths) for a in argv]
    assert main(args) == code
    captured = capsys.readouterr()
    _one_line_error(captured.err, argv[0])
    assert captured.out == ""
    # under --json the same error is also an envelope on stdout
    assert main([*args, "--json"]) == code
    captured = capsys.readouterr()
    _one_line_error(captured.err, argv[0])
    env = json.loads(captured.out)
    assert env["verdict"] == "error" and env["exit_code"] == code and env["result"]["error"]


def test_real_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    """Through the interpreter, as a user runs it: one stderr line and the exit code, for a usage error
    and for a missing checkpoint."""
    for argv, code in ((["lattice", "--ternary", "x"], 2), (["verify", str(tmp_path / "nope")], 3)):
        proc = subprocess.run([sys.executable, "-m", "fito", *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, proc.stderr
        _one_line_error(proc.stderr, argv[0])


# ---- the checkpoint commands -------------------------------------------------------------------------
def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in _commands():
        assert command in out
    assert "Exit codes" in out


def test_inspect_json_shows_decisions_and_lattice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _saved(tmp_path)
    (tmp_path / "epochs" / "000000000004" / "a-undecided").mkdir(parents=True)
    (tmp_path / "epochs" / "000000000004" / "a-undecided" / "rank-00000.fito").write_bytes(b"partial")
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    rows = _envelope(capsys.readouterr().out, "inspect")["result"]
    assert [(r["epoch"], r["status"], r["lattice"]) for r in rows] == [
        (1, "committed", "C"), (2, "committed", "C"), (3, "committed", "C"), (4, "undecided", "A")]


def test_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _saved(tmp_path)
    assert main(["verify", str(tmp_path)]) == 0
    assert "step 3 is whole" in capsys.readouterr().out
    shard = next((tmp_path / "epochs" / "000000000002").glob("*/rank-00000.fito"))
    tensors = json.loads((shard.parent / "manifest.json").read_bytes())["tensors"]
    w = next(t["chunks"][0] for t in tensors if t["fqn"] == "w")
    data = bytearray(shard.read_bytes())
    data[w["offset"] + 100] ^= 1  # inside the bytes of item "w"
    shard.write_bytes(bytes(data))
    assert main(["verify", str(tmp_path)]) == 0  # the newest epoch is still whole
    capsys.readouterr()
    assert main(["verify", str(tmp_path), "--step", "2", "--json"]) == 1
    env = _envelope(capsys.readouterr().out, "verify")
    report = env["result"]
    assert env["verdict"] == "violated"
    assert report["whole"] is False and "'w block 0'" in report["errors"][0] and "expected xxh3-128:" in report["errors"][0]
    assert main(["verify", str(tmp_path), "--epoch", "7"]) == 3  # no such committed epoch
    assert main(["verify", str(tmp_path / "nope")]) == 3  # no checkpoint there


def test_gc_keeps_newest_k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _saved(tmp_path)
    assert main(["gc", str(tmp_path), "--keep", "1", "--grace", "0", "--json"]) == 0
    env = _envelope(capsys.readouterr().out, "gc")
    assert len(env["result"]["removed"]) == 2
    assert fito.Checkpointer(tmp_path).committed() == [3]
    assert sorted(p.name for p in (tmp_path / "epochs").iterdir()) == ["000000000003"]
    assert main(["gc", str(tmp_path), "--keep", "0"]) == 2


@pytest.mark.slow
@pytest.mark.multiproc
def test_readme_first_command_runs_the_demo(tmp_path: Path) -> None:
    """The README's first line is the set-up + main job; run its `fito demo` part for real."""
    first = README.read_text().split("```")[1]
    assert "fito demo" in first and "pip install" in first
    proc = subprocess.run([sys.executable, "-m", "fito", "demo", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "bit-identical" in proc.stdout
    assert re.search(r"-9", proc.stdout)  # the killed rank died by SIGKILL
    assert fito.Checkpointer(tmp_path / "crashed").committed() == [30, 35, 40]
