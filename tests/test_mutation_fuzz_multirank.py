"""Seeded mutation fuzzer on a root written by 2 real gloo ranks (issue 10's note: not covered by the
single-process fuzzer). The root holds three committed steps of an FSDP2 model + AdamW (DTensor chunks
written by both ranks), a replicated scheduler and tensor (written once), a packed entry of small tensors
and rank-local entries under per-rank names. Each mutated copy (the families of tests/helpers/mutations.py
that apply to the sharded format, aimed at either rank's object by the seed, plus those only a multi-rank
root has: tests/helpers/mutations_multirank.py) is restored with and without fallback=True on 2 ranks, then
on 1 rank (rank_local "reset" or a mapping to either saved rank).

Every outcome must be one whole committed step, the same on every rank (each full tensor equal to what that
step saved), or a FitoError of one class on every rank with its state untouched: never a split, never another
exception, never a hang; and restoring changes no file of the root. One 2-rank group (save, mutate, restore)
and one 1-rank group run everything: process starts dominate. Counts are printed (`pytest -s`).

The same on a root written by `fito.dcp.save` and restored by `dcp.load` with fito.dcp.Reader, on 2 ranks and
on 1 (issue 20): one seed per family variant in the suite (~40 s); a campaign sets FITO_FUZZ_SEEDS=N
(N=5: 525 mutated roots, 1,050 restores, ~1 min)."""
from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from fito.testing.dist import run_ranks

HERE = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HERE))
from root_files import DB, decisions, digests  # noqa: E402

pytestmark = [pytest.mark.multiproc, pytest.mark.slow]
ENV = {"FITO_BLOCK_BYTES": "256", "FITO_PACK_LEAF_BYTES": "256"}  # several blocks per item; the 512-byte tensor unpacked


def run_scenarios_lines(group: str, tmp: Path, world: int, restores: list[dict[str, Any]]) -> dict[str, Any]:
    """Run fuzz_ranks' `group` on `world` ranks; append every "restore" line to `restores` (run_scenarios keeps
    one line per scenario and rank); return the other lines by scenario and rank, failing on any error."""
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    found: dict[str, Any] = {}
    for r in run_ranks("fuzz_ranks", [group, str(tmp)], world, timeout=240, env=env):
        assert r.returncode == 0, f"rank {r.rank} of {world} exited {r.returncode}: {r.stderr[-3000:]}"
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if event["scenario"] == "restore":
                    restores.append(event)
                else:
                    found.setdefault(event["scenario"], {})[event["rank"]] = event
    last = {r: max(((e["case"], e["fallback"]) for e in restores if e["rank"] == r), default=None) for r in range(world)}
    assert "error" not in found, f"last restore reported by each rank: {last}\n" + json.dumps(found["error"], indent=1)[:8000]
    return found


def _changed_files(cases: list[dict[str, Any]]) -> list[str]:
    out = []
    for case in cases:
        root = Path(case["root"])
        if digests(root, set(case["touched"])) != case["files"]:
            out.append(f"case {case['case']} ({case['family']} seed {case['seed']}): restore changed files it should only read")
        if DB not in case["touched"] and [list(d) for d in decisions(root) or []] != (case["decisions"] or []):
            out.append(f"case {case['case']} ({case['family']}): restore changed the decision records")
    return out


def _check(lines: dict[int, dict[str, Any]], world: int, cases: list[dict[str, Any]],
           counts: collections.Counter[tuple[str, str]], fallbacks: tuple[bool, ...] = (False, True)) -> list[str]:
    """One problem line per broken rule; counts one outcome per (case, fallback) and world."""
    problems, seen = [], {}
    for event in lines:
        seen.setdefault((event["case"], event["fallback"]), {})[event["rank"]] = event
    for case in cases:
        for fallback in fallbacks:
            ranks = seen.get((case["case"], fallback), {})
            where = f"{world} rank(s), case {case['case']} {case['family']} seed {case['seed']} (rank {case['rank']}) fallback={fallback}"
            if sorted(ranks) != list(range(world)):
                problems.append(f"{where}: results from ranks {sorted(ranks)} only")
                continue
            kinds = sorted({e["category"] for e in ranks.values()})
            category = kinds[0] if len(kinds) == 1 else "ranks DISAGREE"
            if len(kinds) > 1 and all(k.startswith("FitoError:") for k in kinds):
                # every rank refused, but not with one class: a rank's `except` would take another branch
                # than its peers' (every rank raises the lowest failing rank's class: fito.errors.same_kind)
                category = "FitoError:" + "/".join(k.removeprefix("FitoError:") for k in kinds)
                problems.append(f"{where}: the ranks refused with different classes {kinds}")
            counts[case["family"], category] += 1
            problems += [f"{where}: rank {r}: {e['problem'].strip()}" for r, e in ranks.items() if e["problem"]]
            if category == "ranks DISAGREE" and not any(e["problem"] for e in ranks.values()):
                problems.append(f"{where}: categories {[e['category'] for e in ranks.values()]}")
    return problems


def test_two_rank_root_every_mutation_restores_one_whole_step_on_every_rank_or_fails_on_all(tmp_path):
    lines: list[dict[str, Any]] = []
    found = run_scenarios_lines("save+restore", tmp_path, 2, lines)
    assert [found["saved"][r]["committed"] for r in (0, 1)] == [[1, 2, 3]] * 2
    cases = json.loads((tmp_path / "cases.json").read_text())
    (tmp_path / "restores-2.json").write_text(json.dumps(lines))  # every rank's outcome and message, to read
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    problems = _check(lines, 2, cases, counts) + _changed_files(cases)
    lines1: list[dict[str, Any]] = []
    run_scenarios_lines("restore", tmp_path, 1, lines1)
    (tmp_path / "restores-1.json").write_text(json.dumps(lines1))
    counts1: collections.Counter[tuple[str, str]] = collections.Counter()
    problems += _check(lines1, 1, cases, counts1) + _changed_files(cases)
    _report("Checkpointer", cases, ((2, counts), (1, counts1)))
    assert not problems, f"{len(problems)} bad outcomes:\n" + "\n".join(problems[:60])


def _report(path: str, cases: list[dict[str, Any]], runs: tuple[tuple[int, collections.Counter], ...]) -> None:
    for world, c in runs:
        print(f"\nmulti-rank mutation fuzzer ({path}), restored on {world} rank(s): {sum(c.values())} restores of {len(cases)} mutated roots")
        totals: collections.Counter[str] = collections.Counter()
        for (_, category), n in c.items():
            totals[category] += n
        for category, n in sorted(totals.items()):
            print(f"  {category:45s} {n}")
        for family in dict.fromkeys(case["family"] for case in cases):
            print(f"  {family:26s} " + ", ".join(f"{k} {n}" for (f, k), n in sorted(c.items()) if f == family))


def test_two_rank_dcp_root_through_fito_dcp_reader_on_2_and_1_ranks(tmp_path):
    """The same families (but the Checkpointer's per-rank names) on a root written by fito.dcp.save on 2 ranks,
    restored by dcp.load with fito.dcp.Reader on 2 ranks and on 1: one whole committed step equal to what it
    saved, or a FitoError of one class on every rank (inside DCP's CheckpointException) with the target
    untouched. One seed per family variant here; FITO_FUZZ_SEEDS=N for a campaign (issue 20)."""
    lines: list[dict[str, Any]] = []
    found = run_scenarios_lines("dcp-save+restore", tmp_path, 2, lines)
    assert [found["saved"][r]["committed"] for r in (0, 1)] == [[1, 2, 3]] * 2
    cases = json.loads((tmp_path / "cases-dcp.json").read_text())
    (tmp_path / "restores-dcp-2.json").write_text(json.dumps(lines))
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    problems = _check(lines, 2, cases, counts, (False,)) + _changed_files(cases)
    lines1: list[dict[str, Any]] = []
    run_scenarios_lines("dcp-restore", tmp_path, 1, lines1)
    (tmp_path / "restores-dcp-1.json").write_text(json.dumps(lines1))
    counts1: collections.Counter[tuple[str, str]] = collections.Counter()
    problems += _check(lines1, 1, cases, counts1, (False,)) + _changed_files(cases)
    _report("fito.dcp.Reader", cases, ((2, counts), (1, counts1)))
    assert not problems, f"{len(problems)} bad outcomes:\n" + "\n".join(problems[:60])
