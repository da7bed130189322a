"""The pure GC plan (fito.protocol.gc): what it retires and deletes, and in which order, for a log and a
listing given by hand. The library's retention and the model checker both execute this plan."""
from __future__ import annotations

from typing import NamedTuple

import pytest

from fito.protocol.gc import (
    DIR, FILE, LINK, Delete, Entry, RemoveEmptyDir, Retire, live_commits, parse_attempt_fence, plan_gc,
)
from fito.protocol.layout import attempt_name, step_dir


class D(NamedTuple):
    epoch: int
    attempt: str
    outcome: str = "commit"
    retired: bool = False


def att(fence: int, n: int = 0) -> str:
    return attempt_name(fence, None, 0x18C2A000 + n, f"0000{n:04x}")  # a v1 name (no log id)


def edir(epoch: int) -> str:
    return step_dir(epoch)


def adir(epoch: int, attempt: str) -> str:
    return f"{edir(epoch)}/{attempt}"


def listing(*attempts: tuple[int, str], extra: tuple[Entry, ...] = (), age: float = 1e6) -> list[Entry]:
    out = {Entry(edir(e), DIR, age) for e, _ in attempts} | {Entry(adir(e, a), DIR, age) for e, a in attempts}
    return sorted(out | set(extra))


def deleted(plan) -> list[str]:
    return [a.path for a in plan.actions if isinstance(a, Delete)]


def test_attempt_names_parse_only_as_the_layout_makes_them() -> None:
    assert parse_attempt_fence(att(7)) == 7 and parse_attempt_fence("f12-18c2a3b4c5d-0a1b2c3d") == 12
    for foreign in ("latest", "f7", "f7-xyz-00000000", "g7-1-00000000", "f07-1-00000000", "f7-1-0000000",
                    "f7-1-00000000-extra", "../f7-1-00000000", "F7-1-00000000", ""):
        assert parse_attempt_fence(foreign) is None, foreign


def test_retire_comes_before_the_delete_of_the_same_attempt_and_the_newest_is_kept() -> None:
    a = [(e, att(1, e)) for e in (1, 2, 3, 4)]
    plan = plan_gc([D(e, n) for e, n in a], listing(*a), current_fence=1, own_fence=1, keep=2)
    assert plan.actions[:4] == (Retire(*a[0]), Delete(adir(*a[0]), *a[0], "surplus"),
                                Retire(*a[1]), Delete(adir(*a[1]), *a[1], "surplus"))
    assert set(deleted(plan)) == {adir(*a[0]), adir(*a[1])}
    assert plan.actions[4:] == (RemoveEmptyDir(edir(1)), RemoveEmptyDir(edir(2)))
    # keep=None: nothing committed is retired or deleted
    assert plan_gc([D(e, n) for e, n in a], listing(*a), current_fence=1, own_fence=1, keep=None).actions == ()
    # keep=1: only the newest survives, whoever plans
    for own in (1, None):
        plan = plan_gc([D(e, n) for e, n in a], listing(*a), current_fence=1, own_fence=own, keep=1)
        assert [x for x in plan.actions if isinstance(x, Retire)] == [Retire(*k) for k in a[:3]]
        assert adir(*a[3]) not in deleted(plan)


def test_a_step_committed_twice_retires_the_older_commit_before_deleting_it() -> None:
    first, second = (5, att(1, 1)), (5, att(2, 2))
    plan = plan_gc([D(*first), D(*second)], listing(first, second), current_fence=2, own_fence=2, keep=None)
    assert plan.actions == (Retire(*first), Delete(adir(*first), *first, "superseded"))


def test_links_and_foreign_names_are_never_looked_into_nor_deleted() -> None:
    old = (3, att(1))
    extra = (
        Entry("epochs/latest", LINK),  # an operator's link to epochs/000000000003
        Entry("epochs/latest/" + att(1), DIR),  # what a listing that followed the link would show
        Entry(f"{edir(3)}/current", LINK),  # a link inside an epoch directory
        Entry(f"{edir(3)}/{att(1, 9)}", LINK),  # a link that even has an attempt's name
        Entry(f"{edir(3)}/notes", DIR), Entry(f"{edir(3)}/README", FILE),
        Entry("epochs/backup", DIR), Entry("epochs/backup/" + att(1, 8), DIR),
    )
    decisions = [D(*old, outcome="abort")]
    plan = plan_gc(decisions, listing(old, extra=extra), current_fence=2, own_fence=None, keep=1)
    assert deleted(plan) == [adir(*old)]  # the aborted attempt of an older coordinator, nothing else
    assert plan.actions == (Delete(adir(*old), *old, "aborted"),)  # the epoch dir is not empty: kept


def test_undecided_attempts_go_only_when_their_coordinator_can_never_publish() -> None:
    committed = (1, att(1))
    older, ours, newer = (2, att(1, 1)), (2, att(2, 2)), (2, att(3, 3))
    names = listing(committed, older, ours, newer)
    decisions = [D(*committed)]
    # an operator (no fence) while fence 2 is current: only fence 1 is unable to publish
    plan = plan_gc(decisions, names, current_fence=2, own_fence=None, keep=None)
    assert deleted(plan) == [adir(*older)]
    # the live coordinator (fence 2 = current) between its own saves: its own leftovers go too
    plan = plan_gc(decisions, names, current_fence=2, own_fence=2, keep=None)
    assert deleted(plan) == [adir(*older), adir(*ours)]
    # fence 3 was handed out: the coordinator holding 2 is stale and plans nothing at all
    plan = plan_gc(decisions, names, current_fence=3, own_fence=2, keep=1)
    assert plan.actions == () and "stale" in plan.refused
    # grace: a young undecided attempt stays even if its coordinator is gone
    young = listing(committed, older, age=5.0)
    assert deleted(plan_gc(decisions, young, current_fence=2, own_fence=None, keep=None, grace=60)) == []
    assert deleted(plan_gc(decisions, young, current_fence=2, own_fence=None, keep=None, grace=0)) == [adir(*older)]


def test_retired_attempts_are_deleted_and_the_newest_never_is() -> None:
    a, b = (1, att(1, 1)), (2, att(1, 2))
    plan = plan_gc([D(*a, retired=True), D(*b)], listing(a, b), current_fence=5, own_fence=None, keep=1)
    assert plan.actions == (Delete(adir(*a), *a, "retired"), RemoveEmptyDir(edir(1)))
    # the attempt just committed is kept (and counts as the newest) even if the decisions do not show it
    c = (3, att(5, 3))
    plan = plan_gc([D(*b)], listing(b, c), current_fence=5, own_fence=5, keep=1, newest=c)
    assert plan.actions[0] == Retire(*b) and adir(*c) not in deleted(plan)


def test_the_committed_rule_is_the_stores() -> None:
    log = [D(1, "a"), D(2, "a"), D(1, "b"), D(3, "a", "abort"), D(4, "a", retired=True)]
    assert [(d.epoch, d.attempt) for d in live_commits(log)] == [(2, "a"), (1, "b")]
    with pytest.raises(ValueError, match="keep"):
        plan_gc(log, [], current_fence=1, own_fence=1, keep=0)


def test_a_save_below_the_newest_step_keeps_the_higher_steps_unless_it_is_a_rollback():
    a, b, c, d = att(1, 1), att(1, 2), att(2, 3), att(2, 4)
    decisions = [D(200, a), D(300, b), D(10, c), D(20, d)]  # a job restarted at 0 without restoring
    files = listing((200, a), (300, b), (10, c), (20, d))
    plan = plan_gc(decisions, files, current_fence=2, own_fence=2, keep=2, newest=(20, d))
    assert plan.actions == ()  # keep=2 counts 10 and 20; 200 and 300 are above the step saved: kept
    plan = plan_gc(decisions, files, current_fence=2, own_fence=2, keep=1, newest=(20, d))
    assert [x for x in plan.actions if isinstance(x, Retire)] == [Retire(10, c)]
    plan = plan_gc(decisions, files, current_fence=2, own_fence=2, keep=2, newest=(20, d), rollback=True)
    assert [x for x in plan.actions if isinstance(x, Retire)] == [Retire(200, a), Retire(300, b)]
    assert deleted(plan) == [adir(200, a), adir(300, b)]
    # an operator's `fito gc` (no newest given: the last commit) keeps them alike
    assert plan_gc(decisions, files, current_fence=2, own_fence=None, keep=2).actions == ()


def test_discard_deletes_its_own_objects_by_name_and_no_directory_recursively():
    from fito.protocol.gc import Unlink, plan_discard

    a = att(3, 1)
    plan = plan_discard(5, a, 2)
    assert plan.actions == (Unlink(f"{adir(5, a)}/rank-00000.fito"), Unlink(f"{adir(5, a)}/rank-00001.fito"),
                            Unlink(f"{adir(5, a)}/manifest.json"), RemoveEmptyDir(adir(5, a)), RemoveEmptyDir(edir(5)))
    assert not any(isinstance(x, Delete) for x in plan.actions)  # Delete is recursive: never for a discard


def test_the_cli_exit_code_of_each_decision_choice_error_follows_the_readme():
    from fito.commands._contract import exit_code_of
    from fito.commit.decision import CHOICE_ERRORS
    from fito.errors import DecisionLogDamagedError, NoCommittedEpochError

    codes = {cls.__name__: exit_code_of(DecisionLogDamagedError(path="p", unit=None, expected="e", found="f")
                                        if cls is DecisionLogDamagedError else cls("x")) for cls in CHOICE_ERRORS}
    assert codes == {"NoCommittedEpochError": 3, "DecisionLogMissingError": 4, "DecisionLogDamagedError": 4,
                     "DecisionLogLockedError": 4, "DecisionLogReadOnlyError": 4}
    assert NoCommittedEpochError in CHOICE_ERRORS
