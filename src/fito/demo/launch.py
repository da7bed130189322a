"""The demo's launcher is the one every multi-rank test uses: `fito.testing.dist`."""
from fito.testing.dist import RankResult, free_port, run_ranks

__all__ = ["RankResult", "free_port", "run_ranks"]
