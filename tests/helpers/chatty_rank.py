"""A rank for tests/test_run_ranks.py (no torch): rank 1 writes 256 KiB to stdout and stderr, then tells rank 0
it is done through a file in argv[1]; rank 0 waits for that file (at most 30 s), as it would in a collective."""
import os
import sys
import time
from pathlib import Path

done = Path(sys.argv[1]) / "rank1-done"
if os.environ["RANK"] == "1":
    sys.stdout.write("x" * (256 << 10))
    sys.stderr.write("y" * (256 << 10))
    sys.stdout.flush()
    sys.stderr.flush()
    done.touch()
else:
    deadline = time.monotonic() + 30
    while not done.exists():
        if time.monotonic() > deadline:
            sys.exit("rank 1 never finished writing")
        time.sleep(0.05)
