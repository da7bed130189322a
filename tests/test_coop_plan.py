"""The cooperative read plan (fito.plan.coop, pure): every block two or more ranks need gets exactly one owner
among them, balanced by bytes; blocks one rank needs stay its own read; every message is seen the same way
by its owner and its receivers. The exchange itself runs in tests/sharded/test_coop_read.py."""
from __future__ import annotations

from fito.format.manifest import Piece
from fito.plan.coop import fetch_bytes, plan_shares

B = 4096


def pieces(n: int, blocks: int) -> dict[tuple[int, int], Piece]:
    return {(0, i * blocks * B): Piece(0, i * blocks * B, blocks * B - 100, ("0" * 32,) * blocks, 1) for i in range(n)}


def owners(shares, needs):
    """{(piece, block): owner} from the shares: the needer that does not receive it."""
    out = {}
    for r, n in enumerate(needs):
        for pid, (lo, hi) in n.items():
            remote = {b for a, z in shares[r].remote.get(pid, ()) for b in range(a, z)}
            for b in range(lo, hi):
                if b not in remote:
                    assert (pid, b) not in out, f"block {b} of {pid} fetched by ranks {out[(pid, b)]} and {r}"
                    out[(pid, b)] = r
    return out


def test_replicated_blocks_get_one_owner_each_balanced_by_bytes():
    ps = pieces(5, 10)
    needs = [{pid: (0, 10) for pid in ps} for _ in range(4)]
    shares = plan_shares(needs, ps, B, unit_bytes=3 * B, chunk_bytes=2 * B)
    got = owners(shares, needs)
    assert len(got) == 50  # every block of every piece, fetched once
    fetched = fetch_bytes(shares, needs, ps, B)
    assert sum(fetched) == sum(p.length for p in ps.values())
    assert max(fetched) - min(fetched) <= 3 * B  # within one unit
    assert fetch_bytes(None, needs, ps, B) == [sum(p.length for p in ps.values())] * 4  # without the plan: 4 copies


def test_partial_overlap_shares_only_the_common_blocks():
    ps = pieces(1, 10)
    pid = next(iter(ps))
    needs = [{pid: (0, 6)}, {pid: (4, 10)}, {}]
    shares = plan_shares(needs, ps, B, unit_bytes=100 * B, chunk_bytes=100 * B)
    got = owners(shares, needs)
    assert {b for (_, b), r in got.items() if r == 0} >= {0, 1, 2, 3}
    assert {b for (_, b), r in got.items() if r == 1} >= {6, 7, 8, 9}
    assert got[(pid, 4)] == got[(pid, 5)] in (0, 1)
    assert shares[2].messages == () and shares[2].remote == {}  # a rank that needs nothing takes no part


def test_nothing_in_common_needs_no_plan():
    ps = pieces(2, 4)
    a, b = sorted(ps)
    assert plan_shares([{a: (0, 4)}, {b: (0, 4)}], ps, B, unit_bytes=B, chunk_bytes=B) is None


def test_each_message_is_the_same_for_its_owner_and_receivers_and_tags_are_unique():
    ps = pieces(3, 9)
    needs = [{pid: (0, 9) for pid in ps}, {pid: (2, 9) for pid in ps}, {pid: (0, 5) for pid in ps}]
    shares = plan_shares(needs, ps, B, unit_bytes=4 * B, chunk_bytes=2 * B)
    seen: dict[int, object] = {}
    for s in shares:
        tags = [m.tag for m in s.messages]
        assert tags == sorted(tags)  # every rank walks the messages in the same order
        for m in s.messages:
            assert s.rank == m.owner or s.rank in m.receivers
            assert m.hi - m.lo <= 2 and m.owner not in m.receivers
            assert all(needs[r][m.piece][0] <= m.lo and m.hi <= needs[r][m.piece][1] for r in (m.owner, *m.receivers))
            assert seen.setdefault(m.tag, m) == m
    for s in shares:  # what a rank receives is exactly what its messages bring it
        brought = sorted((m.piece, b) for m in seen.values() if s.rank in m.receivers for b in range(m.lo, m.hi))
        remote = sorted((pid, b) for pid, runs in s.remote.items() for a, z in runs for b in range(a, z))
        assert brought == remote
    assert plan_shares(needs, ps, B, unit_bytes=4 * B, chunk_bytes=2 * B) == shares  # deterministic
