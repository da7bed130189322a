"""Attempt names (fito.protocol.layout): they carry fence and log identity; ownership is decided by both."""
from __future__ import annotations

import pytest

from fito.protocol.layout import (
    AttemptName, AttemptPath, attempt_dir, attempt_name, manifest_path, object_path, owns, parse_attempt,
    parse_attempt_path, parse_object, parse_step_dir, step_dir,
)

LOG_A, LOG_B = "0123456789ab", "ba9876543210"


def test_names_round_trip_with_fence_log_clock_and_nonce():
    name = attempt_name(7, LOG_A, 0x18C1A2B3C4D, "9f8e7d6c")
    assert name == "f7-0123456789ab-18c1a2b3c4d-9f8e7d6c"
    assert parse_attempt(name) == AttemptName(7, LOG_A, 0x18C1A2B3C4D, "9f8e7d6c")


def test_v1_names_parse_without_a_log_id():
    assert parse_attempt("f3-18c1a2b3c4d-9f8e7d6c") == AttemptName(3, None, 0x18C1A2B3C4D, "9f8e7d6c")
    assert attempt_name(3, None, 0x18C1A2B3C4D, "9f8e7d6c") == "f3-18c1a2b3c4d-9f8e7d6c"


@pytest.mark.parametrize("name", ["latest", "f3", "f-1-2", "f03-1-2", "F3-1-2", "f3-xyz-1", "f3-1-2-3-4",
                                  "f3-0123456789ab-1-2-", "f3-0123456789AB-1-2", "../f3-1-2", "f3-1-2 ", "",
                                  "f3-1-0000000", "f3-0123456789ab-1-0000000", "f1234567890123456789-1-00000000"])
def test_names_the_layout_did_not_make_parse_as_none_and_are_never_owned(name):
    assert parse_attempt(name) is None
    assert not owns(name, log_id=LOG_A, fence=10**9) and not owns(name, log_id=None, fence=10**9)


def test_a_log_owns_only_its_own_attempts_of_its_fence_or_older():
    mine_old, mine_now, mine_newer = (attempt_name(f, LOG_A, 1, "000000aa") for f in (1, 2, 3))
    assert owns(mine_old, log_id=LOG_A, fence=2) and owns(mine_now, log_id=LOG_A, fence=2)
    assert not owns(mine_newer, log_id=LOG_A, fence=2)  # a newer coordinator's live attempt
    assert not owns(attempt_name(1, LOG_B, 1, "000000aa"), log_id=LOG_A, fence=2)  # another log's, whatever its fence


def test_v1_names_belong_only_to_a_log_without_identity():
    v1 = "f1-18c1a2b3c4d-9f8e7d6c"
    assert owns(v1, log_id=None, fence=1)
    assert not owns(v1, log_id=LOG_A, fence=99)  # a v1 name cannot prove which log made it
    assert not owns(attempt_name(1, LOG_A, 1, "000000aa"), log_id=None, fence=99)


@pytest.mark.parametrize("args", [(-1, LOG_A, 1, "000000aa"), (1, "short", 1, "000000aa"), (1, LOG_A, 1, "not-hex"),
                                  (1, LOG_A, -5, "000000aa"), (1, LOG_A, 1, "aa"), (10**18, LOG_A, 1, "000000aa")])
def test_attempt_name_refuses_what_it_could_not_parse_back(args):
    with pytest.raises(ValueError):
        attempt_name(*args)


def test_every_name_of_a_root_round_trips_through_the_layout():
    name = attempt_name(7, LOG_A, 1_700_000_000_123, "9f8e7d6c")
    assert parse_attempt(name).created == 1_700_000_000.123  # seconds since the Unix epoch: an age for GC
    assert step_dir(5) == "epochs/000000000005" and parse_step_dir("000000000005") == 5
    assert attempt_dir(5, name) == f"epochs/000000000005/{name}"
    assert parse_attempt_path(attempt_dir(5, name)) == AttemptPath(5, name, parse_attempt(name))
    assert object_path(5, name, 3) == f"{attempt_dir(5, name)}/rank-00003.fito"
    assert parse_object("rank-00003.fito") == 3
    assert manifest_path(5, name) == f"{attempt_dir(5, name)}/manifest.json"


@pytest.mark.parametrize("name", ["5", "00000000005", "0000000000050", "latest", "00000000000a", "-00000000001"])
def test_a_step_directory_the_layout_did_not_make_is_none(name):
    assert parse_step_dir(name) is None


@pytest.mark.parametrize("name", ["rank-3.fito", "rank-000003.fito", "rank-00003.fito.tmp", "manifest.json",
                                  "x/rank-00003.fito", "rank-0000a.fito"])
def test_an_object_name_the_layout_did_not_make_is_none(name):
    assert parse_object(name) is None


@pytest.mark.parametrize("rel", ["epochs/000000000005", "epochs/5/f1-1-00000000", "other/000000000005/f1-1-00000000",
                                 "epochs/000000000005/latest", "epochs/000000000005/f1-1-00000000/rank-00000.fito"])
def test_an_attempt_path_the_layout_did_not_make_is_none(rel):
    assert parse_attempt_path(rel) is None
