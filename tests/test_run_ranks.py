"""fito.testing.dist.run_ranks, the launcher of every multi-rank test: a rank that writes more than a pipe
holds while another rank waits for it must not hang the group (ranks' output went to pipes read one rank
after the other: rank 1 blocked on a full pipe while rank 0, read first, waited for rank 1)."""
from pathlib import Path

from fito.testing.dist import run_ranks

HERE = Path(__file__).parent / "helpers"


def test_a_rank_writing_more_than_a_pipe_holds_while_another_waits_for_it_does_not_hang(tmp_path):
    results = run_ranks("chatty_rank", [str(tmp_path)], 2, timeout=20, path=[str(HERE)])
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
    assert len(results[1].stdout) == len(results[1].stderr) == 256 << 10
