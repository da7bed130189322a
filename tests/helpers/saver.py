"""A process that saves forever until killed: every value of step s equals s, so a mix is visible.
Usage: python saver.py ROOT. Prints 'committed S' after each commit returns."""
import sys

import torch

import fito


def main() -> None:
    root = sys.argv[1]
    ck = fito.Checkpointer(root, keep=2)
    state = {f"layer{i}": torch.zeros(1 << 17) for i in range(6)}  # 6 units of 512 KiB
    state["meta"] = {"step": 0}
    try:
        step = ck.restore(state)
    except fito.NoCommittedEpochError:
        step = 0
    print(f"started {step}", flush=True)
    while True:
        step += 1
        for name, t in state.items():
            if isinstance(t, torch.Tensor):
                t.fill_(step)
        state["meta"] = {"step": step}
        ck.save(step, state)
        print(f"committed {step}", flush=True)


if __name__ == "__main__":
    main()
