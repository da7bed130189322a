"""The model checker: naive and paper-literal protocols fail with short counterexamples; the library's
bilateral protocol passes exhaustively for 2 and 3 ranks (state counts pinned, so a change in the
protocol or the model that alters the explored space is noticed).

Since symmetry reduction (issue 16, fito.model.symmetry; on by default) the search counts one state per
class of states equal up to renaming ranks: every count below is that of classes, the full count beside it
(tests/model/test_symmetry.py checks both searches agree on every verdict and that the key is exactly
canonical). 2 ranks: naive 172 -> 97, paper-literal 2,624 -> 1,354, bilateral 2,225 -> 1,179 (10,421 ->
5,490 transitions; depth unchanged: a renaming does not shorten a path), retry 9,389 -> 4,925; 3 ranks
58,693 -> 10,939. Then the restart settles the dead attempt (Config.settle_dead, tests/model/
test_settle_dead.py: same verdicts): retry 4,925 -> 985 classes (1,755 states unreduced).

Where the pinned bilateral counts come from, and why they changed with Persist (issue 10's seam; re-derived by
running the explorer before and after):
- A state is (machines, pending commands, network multiset, simulated disk, decision log, ghost history,
  fence tokens, attempt owners); successors are: a process executes its next command, a message is
  delivered or lost, the coordinator times out, a process crashes, the job restarts.
- Participants and coordinator used to emit FsyncFile then FsyncDir, two steps per object; they now emit one
  Persist, executed on the simulated disk as fsync file + fsync directory in one step (fito.model.simexec
  says why no crash state is lost). Gone are the states where a process sat between its two fsyncs
  (bytes durable, name not), times every interleaving of the other processes with that point: 2 ranks
  3,008 -> 2,225 states, 14,382 -> 10,421 transitions, depth 21 -> 18; 3 ranks 99,068 -> 58,693; retry
  22,939 -> 9,389; paper-literal (the library's participant) 3,460 -> 2,624; zombies with the token at
  first publish 328,670 -> 163,265 (counterexample 32 -> 26 steps). Every property verdict is unchanged.

Why they did not change with issue 10 before that:
- The explorer now drives the machines through fito.protocol.drive (`feed` on delivery and timeout,
  `step` per command) instead of its own loop; `step` executes and feeds back in the same order the old loop
  did (first pending command, reply handled at once, new commands queued behind), so every transition
  leads to the same state.
- The Coordinator now carries its fence (from Begin) and the global plan. The fence equals the token the
  world already held for that coordinator (`World.fence`), so it is a function of the rest of the state and
  splits no state; the plan is a constant of the configuration; the coverage check it enables never fails
  in the model (each rank vouches for its one unit), so it adds no abort path. Net: no new or removed
  interleavings."""
from __future__ import annotations

import json

import pytest

from fito.cli import main
from fito.model.explorer import explore, replay
from fito.model.explorer_model import Model
from fito.model.explorer_world import Config
from fito.model.protocols import VARIANTS
from fito.model.simfs import MISSING, SimDisk, each_crash_image, torn


# ---- the simulated disk ----
def test_unsynced_data_can_be_lost_kept_or_torn() -> None:
    disk = SimDisk().write_durable("d/f", ("old",), 0).overwrite("d/f", ("new",), 0)
    assert [c for _, c in disk.crash_options("d/f")] == [("old",), ("new",), torn(("old",), ("new",))]
    assert disk.fsync_file("d/f").crash_options("d/f") == [("intact", ("new",))]


def test_new_entry_is_durable_only_after_directory_fsync() -> None:
    disk = SimDisk().create("d/f", ("x",), 0).fsync_file("d/f")
    assert [c for _, c in disk.crash_options("d/f")] == [MISSING, ("x",)]
    assert [c for _, c in disk.fsync_dir("d").crash_options("d/f")] == [("x",)]
    # a node crash drops exactly what that node had not made durable
    assert disk.lose_volatile(0).read("d/f") is MISSING
    assert disk.fsync_dir("d").lose_volatile(0).read("d/f") == ("x",)


def test_crash_images_branch_only_on_files_read() -> None:
    disk = SimDisk().create("a", ("1",), 0).create("b", ("2",), 0)
    both = list(each_crash_image(disk, lambda read: (read("a"), read("b"))))
    only_a = list(each_crash_image(disk, lambda read: read("a")))
    assert len(both) == 4 * 4 and len({r for _, r in both}) == 16
    assert len(only_a) == 4


# ---- the protocols ----
def test_naive_loads_a_mix_after_one_in_place_write() -> None:
    result = explore("naive", Config(ranks=2))
    assert not result.ok and result.complete
    cex = result.violations["AlwaysRecoversOneCommittedEpoch"]
    assert cex.trace[1:] == ["rank0: overwrite naive/rank-00000.pt in place with epoch 2"]  # BFS-shortest
    assert "rank0=e2/a, rank1=e1/x" in cex.detail
    assert result.states == 97 and result.transitions == 318  # 172 / 568 without symmetry reduction
    _, violations = replay("naive", Config(ranks=2), cex.trace)
    assert "AlwaysRecoversOneCommittedEpoch" in {v.property for v in violations}


def test_paper_literal_recovers_a_mix_when_commit_reaches_one_rank() -> None:
    result = explore("paper-literal", Config(ranks=2))
    cex = result.violations["AlwaysRecoversOneCommittedEpoch"]
    assert cex.trace[-3:] == [
        "coord: notify every rank: commit e2/a", "net: deliver COMMIT(e2/a) to rank0",
        "rank0: mark e2/a stable locally (atomic, durable)",
    ]
    assert "rank0=e2/a, rank1=e1/x" in cex.detail
    # the decision lived only in memory: a power failure right after it loses a committed epoch
    lost = result.violations["CommittedStaysRecoverable"]
    assert lost.trace[-1] == "coord: decide commit e2/a (the variant's commit point)"
    assert "AbortedNeverVisible" not in result.violations
    assert result.states == 1354  # 2,624 unreduced; 3,460 before Persist: its participant is the library's (module docstring)
    for c in result.violations.values():
        _, violations = replay("paper-literal", Config(ranks=2), c.trace)
        assert c.property in {v.property for v in violations}


def test_bilateral_two_ranks_holds_exhaustively() -> None:
    result = explore("bilateral", Config(ranks=2))
    assert result.ok and result.complete, [c.render() for c in result.violations.values()]
    # 2,225 states / 10,421 transitions / depth 18 (3,008 / 14,382 / 21 before Persist replaced FsyncFile +
    # FsyncDir: the states between a process's two fsyncs are gone; see the module docstring). The deepest
    # BFS path is the happy path (2 x 3 participant commands, 2 READY deliveries, 5 coordinator commands,
    # 2 COMMIT deliveries = 15 steps; 18 before, one FsyncDir per rank and coordinator) followed by a crash
    # of each of the 3 processes (machines back to fresh: a state not seen before).
    assert (result.states, result.transitions, result.max_depth) == (1179, 5490, 18)  # unreduced: 2,225 / 10,421 / 18
    assert result.crash_images > 0


@pytest.mark.slow
def test_bilateral_three_ranks_holds_exhaustively() -> None:
    result = explore("bilateral", Config(ranks=3))
    assert result.ok and result.complete
    # 58,693 (99,068 before Persist: per process one step fewer between write and READY/publish, times
    # the other processes' interleavings with it; module docstring)
    assert result.states == 10939  # unreduced: 58,693


def test_bilateral_with_a_retry_keeps_the_aborted_attempt_invisible() -> None:
    cfg = Config(ranks=2, attempts=2, message_loss=False, crashes=False)
    result = explore("bilateral", cfg)
    # 9,389 (22,939 before Persist, whose one step per object removes the between-fsyncs states of both
    # attempts; unchanged by issue 10 before that: a job restart begins a new coordinator with a new token,
    # World.fence and the machine's own fence move together, so the retry adds no state of its own);
    # 4,925 before issue 16 settled the dead attempt at the restart (Config.settle_dead)
    assert result.ok and result.complete and result.states == 985  # unreduced: 1,755
    # the space really contains an aborted first attempt followed by a committed second one
    paper = explore("paper-literal", cfg, stop_at_first=True)
    assert not paper.ok


def test_exploration_is_deterministic() -> None:
    a = explore("paper-literal", Config(ranks=2))
    b = explore("paper-literal", Config(ranks=2))
    assert (a.states, a.transitions) == (b.states, b.transitions)
    assert {k: v.trace for k, v in a.violations.items()} == {k: v.trace for k, v in b.violations.items()}


def test_every_state_has_distinct_successor_labels() -> None:
    """Replay picks a transition by its label, so labels must identify a transition uniquely."""
    model = Model(VARIANTS["bilateral"], Config(ranks=2))
    frontier, seen = [model.initial()], set()
    while frontier and len(seen) < 500:
        w = frontier.pop()
        if w in seen:
            continue
        seen.add(w)
        succ = model.successors(w)
        by_label: dict[str, object] = {}
        for label, s in succ:
            assert by_label.setdefault(label, s) == s, label
        frontier.extend(s for _, s in succ)


def test_replay_rejects_a_step_that_is_not_enabled() -> None:
    with pytest.raises(ValueError, match="not enabled"):
        replay("bilateral", Config(ranks=2), ["coord: publish decision commit e2/a (durable, atomic)"])


# ---- the command line ----
def test_cli_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--protocol", "naive", "--ranks", "2"]) == 1
    out = capsys.readouterr().out
    assert "counterexample to AlwaysRecoversOneCommittedEpoch" in out and "VIOLATED" in out
    assert main(["check", "--protocol", "bilateral", "--ranks", "2", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["command"] == "check" and env["verdict"] == "holds"
    doc = env["result"]
    assert doc["ok"] is True and doc["states"] == 1179 and doc["symmetry"] is True
    assert main(["check", "--protocol", "bilateral", "--ranks", "2", "--no-symmetry", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"]["states"] == 2225
    assert set(doc["properties"].values()) == {"holds"}


def test_cli_search_cut_short_is_unknown_not_holds(capsys: pytest.CaptureFixture[str]) -> None:
    """Three-valued: a search stopped by --max-states with no violation found decides nothing."""
    assert main(["check", "--protocol", "bilateral", "--ranks", "2", "--max-states", "50", "--json"]) == 5
    env = json.loads(capsys.readouterr().out)
    assert env["verdict"] == "unknown" and env["exit_code"] == 5
    doc = env["result"]
    assert doc["complete"] is False and doc["ok"] is None
    assert set(doc["properties"].values()) == {"unknown"}
    assert main(["check", "--protocol", "bilateral", "--ranks", "2", "--max-states", "50"]) == 5
    text = capsys.readouterr().out
    assert "unknown" in text and "holds" not in text
    # a violation found before the cut is still a violation
    assert main(["check", "--protocol", "naive", "--ranks", "2", "--max-states", "100000", "--json"]) == 1
    env = json.loads(capsys.readouterr().out)
    assert env["verdict"] == "violated" and "violated" in env["result"]["properties"].values()


# ---- fencing: a zombie coordinator after a job restart ----
ZOMBIE_TRACE = [
    "start: epoch 1 committed and durable on 2 ranks; every process begins saving epoch 2 attempt a",
    *[f"rank{r}: {step}" for r in (0, 1) for step in (
        f"write shard e2/a/rank-{r}.fito", f"persist e2/a/rank-{r}.fito", "send READY(e2/a)")],
    "net: deliver READY(rank0, e2/a) to coord", "net: deliver READY(rank1, e2/a) to coord",
    "coord: write manifest e2/a/manifest.json", "coord: persist e2/a/manifest.json",
    "job restart, but the old coordinator survives as a zombie; every other process begins epoch 2 attempt b",
    *[f"rank{r}: {step}" for r in (0, 1) for step in (
        f"write shard e2/b/rank-{r}.fito", f"persist e2/b/rank-{r}.fito", "send READY(e2/b)")],
    "zombie coord: publish decision commit e2/a (durable, atomic)",
    "zombie coord: notify every rank: commit e2/a",
    "net: deliver READY(rank0, e2/b) to coord", "net: deliver READY(rank1, e2/b) to coord",
    "coord: write manifest e2/b/manifest.json", "coord: persist e2/b/manifest.json",
    "zombie coord: collect garbage (keep 1): retire+delete ['e1/x'], delete undecided ['e2/b/']",
    "coord: publish decision commit e2/b (durable, atomic)",
]


def test_lazy_fencing_lets_a_zombie_delete_the_live_attempt_before_it_commits() -> None:
    """Found by `fito check --attempts 2 --zombies --fence-at-first-publish --no-loss --no-crashes`
    (BFS-shortest, 26 steps; 32 with FsyncFile + FsyncDir) in the Checkpointer before b7688c9: the token was taken at the first publish,
    so a zombie that publishes first held the newest token, and its garbage collection deleted the live
    job's finished attempt, which then committed with no files."""
    cfg = Config(ranks=2, attempts=2, zombies=True, fence_at_first_publish=True, message_loss=False, crashes=False)
    _, violations = replay("bilateral", cfg, ZOMBIE_TRACE)
    assert [v.property for v in violations] == ["CommittedStaysRecoverable"]
    assert "e2/b is committed" in violations[0].detail
    # taking the token when the job starts fences the zombie out: its publish is refused
    eager = Config(ranks=2, attempts=2, zombies=True, message_loss=False, crashes=False)  # the library since b7688c9
    with pytest.raises(ValueError, match="zombie coord: publish decision commit e2/a"):
        replay("bilateral", eager, ZOMBIE_TRACE)
    refused = ZOMBIE_TRACE[:17] + ["zombie coord: publish decision commit e2/a: REFUSED, stale fence"]
    _, violations = replay("bilateral", eager, refused)
    assert violations == []


def test_cli_four_ranks(capsys: pytest.CaptureFixture[str]) -> None:
    """`fito check --ranks 4` runs (cut short here: the full search takes about a minute), text and JSON."""
    assert main(["check", "--ranks", "4", "--max-states", "1500", "--json"]) == 5
    doc = json.loads(capsys.readouterr().out)["result"]
    assert doc["ranks"] == 4 and doc["symmetry"] is True and doc["states"] >= 1500 and doc["cpu_seconds"] > 0
    assert main(["check", "--ranks", "4", "--max-states", "1500"]) == 5
    out = capsys.readouterr().out
    assert "4 ranks" in out and "one state per rank permutation class" in out and "s CPU" in out
