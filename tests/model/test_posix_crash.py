"""The one POSIX crash model (fito.model.posix_crash), and both of its users agreeing on it: the checker's
simulated disk (simfs, abstract contents) and the crash-state enumerator of the real path (real bytes)."""
from __future__ import annotations

from fito.model.posix_crash import DIR, KEPT, LOST, LogicalFS, Op, data_outcomes, torn_bytes
from fito.model.simfs import MISSING, SimDisk, torn


def _kinds(labels: list[str]) -> list[str]:
    return ["torn" if label.startswith("torn") else label or "intact" for label in labels]


def test_simfs_and_the_enumerator_offer_the_same_outcomes_for_an_unsynced_new_file() -> None:
    """A file created and written, neither it nor its directory fsynced: absent, or present with its bytes
    lost, kept or torn -- in both models (the enumerator details the torn shapes, the checker folds them)."""
    disk = SimDisk().create("d/f", ("new",), owner=0)
    sim = [(c is not MISSING, label) for label, c in disk.crash_options("d/f")]
    fs = LogicalFS({"d": DIR})
    for op in (Op("create", "d/f"), Op("write", "d/f", (0, b"abcdefgh"))):
        fs.apply(op)
    real = sorted({("d/f" in dict(s.files), _kinds([c for p, c in s.choices if p == "d/f" and "entry" not in c] or [""])[0])
                   for s in fs.crash_states(2)})
    assert sorted((present, _kinds([label])[0]) for present, label in sim if present) == \
        sorted({(p, k) for p, k in real if p}) == sorted([(True, "torn"), (True, LOST), (True, KEPT)])
    assert (False, "entry lost") in sim and (False, "intact") in real


def test_a_lost_unlink_brings_back_the_durable_bytes_not_the_page_cache() -> None:
    """simfs used to answer "intact" with the bytes last written for a name whose unlink a crash undoes,
    even when those bytes were never fsynced; the rule is the file's: lost, kept or torn."""
    disk = SimDisk().write_durable("d/f", ("old",), owner=0).overwrite("d/f", ("new",), owner=0).unlink("d/f")
    assert [c for _, c in disk.crash_options("d/f")] == [("old",), ("new",), torn(("old",), ("new",)), MISSING]


def test_a_torn_append_keeps_the_fsynced_bytes_and_cuts_the_rest() -> None:
    outcomes = data_outcomes(b"abcd", b"abcdefgh", torn_bytes)
    assert [c for _, c in outcomes] == [b"abcd", b"abcdefgh", b"abcdef", b"abcd\0\0\0\0"]


def test_after_a_truncate_no_old_byte_is_promised() -> None:
    """The enumerator used to keep the bytes old and new versions happen to share ("ab" here) through a
    truncate + rewrite: ext4 may commit the truncate (size 0) before any new block is written."""
    fs = LogicalFS({"f": b"abcd"})
    for op in (Op("trunc", "f"), Op("write", "f", (0, b"abXY"))):
        fs.apply(op)
    contents = {dict(s.files)["f"] for s in fs.crash_states(2)}
    assert contents == {b"abcd", b"abXY", b"ab", b"\0\0\0\0"}


def test_makedirs_replays_against_the_model_view() -> None:
    """A recorded makedirs creates only what is missing where it is replayed (another rank may have made
    the directory first), each new entry made durable by the fsync of its parent, as LocalFS.makedirs does."""
    fs = LogicalFS({"e": DIR})
    fs.apply(Op("create", "e/x"))
    fs.apply(Op("makedirs", "e/a/b"))
    assert fs.dur["e/a"] == DIR and fs.dur["e/a/b"] == DIR
    assert "e/x" in fs.dur  # the parent's fsync made the earlier create in it durable too
    fs.apply(Op("makedirs", "e/a/b"))  # already there: nothing changes
    assert {s.files for s in fs.crash_states(3)} == {(("e", DIR), ("e/a", DIR), ("e/a/b", DIR), ("e/x", b""))}
