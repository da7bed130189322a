"""Fleet update simulation (paper §7, §9.2; correction 10 (docs/corrections.md)).

A fleet of N nodes runs one collective (all N nodes) per tick and moves from epoch 0 to epoch 1. Every
message is lost independently with probability `loss` and re-sent each tick until it gets through, so
nobody ever knows when everybody knows (no common knowledge). Modes:

- naive: the coordinator broadcasts "switch"; a node switches when the message arrives. Collectives run
  with whatever epochs the nodes hold.
- tagged: the same broadcast, but every collective first exchanges the participants' epoch tags and
  aborts on any disagreement (fito.coord.collectives does this over torch.distributed).
- consensus: the transition commits at a consensus service (the proposal is re-sent until it arrives);
  nodes observe it by watch notifications (lossy), and every collective waits until each node has been
  admitted by the service (a lossy round trip, re-sent each tick). A node whose epoch is not the committed
  one is fenced out (refused; the refusal tells it the new epoch). A commit voids admissions granted under
  the old epoch: a collective that had some is aborted.
- consensus-nofence: consensus agreement on the decision alone (Def 7.2): nodes switch when the watch
  tells them, with no admission check.

The simulation computes, per collective, which epochs its participants hold and whether the mode's rule
lets it run; a "mixed" collective is one that ran with participants on different epochs. Nothing is set
to zero by hand: zero mixed collectives for tagged and consensus follows from their rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("naive", "consensus", "tagged", "consensus-nofence")


@dataclass
class FleetResult:
    mode: str
    nodes: int
    loss: float
    runs: int
    mixed: np.ndarray  # per run: collectives that ran with participants on different epochs
    aborted: np.ndarray  # per run: collectives refused (tag mismatch, fenced node, unanswered admission)
    converge: np.ndarray  # per run: tick of the first collective that completed with every node on epoch 1
    commit: np.ndarray  # per run: tick at which the decision was committed (0: no decision service)
    messages: np.ndarray  # per run: messages sent (broadcast/watch/proposal/admission, incl. re-sends)
    fenced: np.ndarray  # per run (consensus): admissions refused because the node held an old epoch
    stalled: np.ndarray  # per run (consensus): ticks in which the collective waited for admissions

    def summary(self) -> dict[str, object]:
        def stats(a: np.ndarray) -> dict[str, float]:
            return {"mean": float(a.mean()), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
                    "max": float(a.max())}

        return {
            "mode": self.mode, "nodes": self.nodes, "loss": self.loss, "runs": self.runs,
            "runs_with_mixed": int((self.mixed > 0).sum()),
            "mixed": stats(self.mixed), "aborted": stats(self.aborted), "converge_ticks": stats(self.converge),
            "commit_tick": stats(self.commit), "messages": stats(self.messages),
            "fenced": stats(self.fenced), "stalled": stats(self.stalled),
        }


def simulate(
    mode: str, *, nodes: int, loss: float, runs: int, seed: int = 0,
    max_ticks: int = 1_000_000,
) -> FleetResult:
    """Run `runs` independent rollouts of one epoch transition; see the module docstring for the rules."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    if not 0.0 <= loss < 1.0:
        raise ValueError(f"loss {loss}: must be in [0, 1)")
    if nodes < 1 or runs < 1:
        raise ValueError("nodes and runs must be >= 1")
    rng = np.random.default_rng(seed)
    R, N = runs, nodes
    epoch = np.zeros((R, N), dtype=bool)  # False: epoch 0, True: epoch 1
    committed = np.zeros(R, dtype=bool)  # consensus modes: decision committed at the service
    commit_tick = np.zeros(R, dtype=np.int64)
    mixed = np.zeros(R, dtype=np.int64)
    aborted = np.zeros(R, dtype=np.int64)
    messages = np.zeros(R, dtype=np.int64)
    converge = np.full(R, -1, dtype=np.int64)
    p_answer = (1.0 - loss) ** 2  # an admission round trip gets through (request and reply)
    admitted = np.zeros((R, N), dtype=bool)  # consensus: admitted to the pending collective
    fenced = np.zeros(R, dtype=np.int64)
    stalled = np.zeros(R, dtype=np.int64)
    consensus = mode in ("consensus", "consensus-nofence")

    t = 0
    while (converge < 0).any():
        t += 1
        if t > max_ticks:
            raise RuntimeError(f"no convergence within {max_ticks} ticks (loss {loss})")
        live = converge < 0  # runs still rolling out

        if consensus:
            # the coordinator re-sends its proposal (same decision id) until the service has it
            proposing = live & ~committed
            messages += proposing
            arrives = proposing & (rng.random(R) >= loss)
            committed |= arrives
            commit_tick[arrives] = t
            # the fence moved: admissions granted under the old epoch are void; a collective that had
            # some is aborted (its admitted nodes must ask again under the new epoch)
            if mode == "consensus":
                aborted += arrives & admitted.any(axis=1)
                admitted[arrives] = False
            # watch notifications to nodes that have not observed yet, from the tick after the commit
            watching = (committed & live & (commit_tick < t))[:, None] & ~epoch
            messages += watching.sum(axis=1)
            epoch |= watching & (rng.random((R, N)) >= loss)
        else:
            sending = live[:, None] & ~epoch  # re-sent to every node that has not acknowledged
            messages += sending.sum(axis=1)
            epoch |= sending & (rng.random((R, N)) >= loss)

        # this tick's collective, with the epochs the nodes hold now
        if mode == "consensus":
            # admissions: each node not yet admitted asks the service (request and reply both lossy)
            asking = live[:, None] & ~admitted
            messages += 2 * asking.sum(axis=1)
            answered = asking & (rng.random((R, N)) < p_answer)
            at_service = epoch == committed[:, None]
            admitted |= answered & at_service
            refused = answered & ~at_service  # fenced out: it holds an epoch older than the committed one
            fenced += refused.sum(axis=1)
            epoch |= refused  # ... and the refusal tells it the committed epoch (it switches, asks again)
            runs_ok = admitted.all(axis=1)
            stalled += live & ~runs_ok
        all_new, any_new = epoch.all(axis=1), epoch.any(axis=1)
        agree = all_new | ~any_new
        if mode in ("naive", "consensus-nofence"):
            runs_ok = np.ones(R, dtype=bool)
        elif mode == "tagged":
            runs_ok = agree
            aborted += live & ~runs_ok
        mixed += live & runs_ok & ~agree
        done = live & runs_ok & all_new
        converge[done] = t
        if mode == "consensus":
            admitted[runs_ok] = False  # the next collective needs fresh admissions

    return FleetResult(mode=mode, nodes=N, loss=loss, runs=R, mixed=mixed, aborted=aborted, converge=converge,
                       commit=commit_tick, messages=messages, fenced=fenced, stalled=stalled)


def compare(
    *, nodes: int, loss: float, runs: int, seed: int = 0, modes: tuple[str, ...] = MODES,
) -> list[FleetResult]:
    """Every mode on the same parameters (each with its own seeded stream)."""
    return [simulate(m, nodes=nodes, loss=loss, runs=runs, seed=seed + i) for i, m in enumerate(modes)]
