"""Two roles for the `fito gc` vs live job race (tests/test_gc_live.py).

python gc_race.py train ROOT STEPS OUT   saves steps 1..STEPS (keep=None); after each commit restores the step
                                          it just committed; writes {"seen": [...], "errors": [...]} to OUT.
python gc_race.py gc ROOT STOP OUT        runs `fito gc ROOT --keep 1 --grace 0` again and again until the
                                          file STOP exists; writes {"codes": [...]} to OUT."""
import contextlib
import io
import json
import sys
from pathlib import Path


def state(step: int):
    import torch

    return {"w": torch.full((4096,), float(step)), "meta": {"step": step}}


def train(root: str, steps: int, out: str) -> None:
    import torch

    import fito

    seen, errors = [], []
    ck = fito.Checkpointer(root, keep=None, progress=False)
    for step in range(1, steps + 1):
        try:
            ck.save(step, state(step))
            seen.append(step)
            into = {"w": torch.zeros(4096), "meta": None}
            if ck.restore(into, step=step) != step or not torch.all(into["w"] == step) or into["meta"] != {"step": step}:
                errors.append(f"step {step}: restored something else")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(f"step {step}: {type(exc).__name__}: {exc}")
    ck.close()
    Path(out).write_text(json.dumps({"seen": seen, "errors": errors}))


def gc(root: str, stop: str, out: str) -> None:
    from fito.cli import main

    codes, errors = [], []
    while not Path(stop).exists():
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            codes.append(main(["gc", root, "--keep", "1", "--grace", "0"]))
        if codes[-1]:
            errors.append(err.getvalue())
    Path(out).write_text(json.dumps({"codes": codes, "errors": errors}))


if __name__ == "__main__":
    role, root, arg, out = sys.argv[1:5]
    train(root, int(arg), out) if role == "train" else gc(root, arg, out)
