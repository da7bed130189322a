"""Explicit-state model checker for checkpoint commit protocols.

The explorer drives the SAME sans-I/O machines the library uses (`fito.protocol.Participant` and
`Coordinator`, or a variant from `fito.model.protocols`) through every interleaving of: command execution
by each process, delivery, delay and loss of every message, coordinator timeouts, crash-and-restart of any
process at any point (the node's un-fsynced writes are lost), and job restarts that retry the save.

Scenario: epoch 1 is committed and durable; epoch 2 is being saved. At EVERY reachable state the checker
also pulls the plug: it enumerates every post-crash disk POSIX allows (un-fsynced data lost, kept or torn;
un-fsynced directory entries lost or kept) for the files recovery reads, runs the variant's recovery on
each, and checks the properties. Exploration is breadth-first in a deterministic order, so the first
counterexample found for a property is a shortest one; `replay` re-executes a trace and re-checks it.

This module is the search; the parts it drives live beside it: fito.model.explorer_world (state and
Config), fito.model.explorer_model (initial state and successors), fito.model.explorer_properties (the
checks) and fito.model.explorer_result (verdicts and counterexamples)."""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from fito.model.explorer_model import Model
from fito.model.explorer_properties import Violation
from fito.model.explorer_result import Counterexample, Result
from fito.model.explorer_world import Config, World
from fito.model.protocols import Variant, get_variant
from fito.model.symmetry import Canonicalizer, identity_key
from fito.protocol import Command


ProgressFn = Callable[[int, int, int], None]  # (states, frontier, depth)


def explore(
    protocol: str | Variant, config: Config = Config(), *, mutation: str | None = None,
    stop_at_first: bool = False, max_states: int | None = None, progress: ProgressFn | None = None,
) -> Result:
    """Breadth-first search of every reachable state; every state is checked against every property."""
    variant = protocol if isinstance(protocol, Variant) else get_variant(protocol, mutation)
    model = Model(variant, config)
    start = time.perf_counter()
    cpu = time.process_time()
    key: Callable[[World], object] = Canonicalizer(config.ranks).key if config.symmetry else identity_key
    init = model.initial()
    # key -> (parent key, label, depth); the frontier holds the concrete state first reached in each class
    parents: dict[object, tuple[object | None, str, int]] = {key(init): (None, "", 0)}
    frontier: deque[tuple[World, object]] = deque([(init, key(init))])
    # With symmetry, successors reached before are skipped without canonicalizing them again (hashing a
    # state is several times cheaper than its canonical key; most successors are such repeats).
    reached: set[World] | None = {init} if config.symmetry else None
    result = Result(variant.name, config)
    popped = 0
    while frontier:
        w, k = frontier.popleft()
        d = parents[k][2]
        result.max_depth = max(result.max_depth, d)
        violations, images = model.check(w)
        result.crash_images += images
        for v in violations:
            if v.property not in result.violations:
                result.violations[v.property] = Counterexample(v.property, _trace(parents, k, model), v.detail)
        if stop_at_first and result.violations:
            result.complete = False
            break
        for label, nxt in model.successors(w):
            result.transitions += 1
            if reached is not None:
                if nxt in reached:
                    continue
                reached.add(nxt)
            nk = key(nxt)
            if nk not in parents:
                parents[nk] = (k, label, d + 1)
                frontier.append((nxt, nk))
        if max_states is not None and len(parents) >= max_states and frontier:
            result.complete = False
            break
        popped += 1
        if progress is not None and popped % 1000 == 0:
            progress(len(parents), len(frontier), d)
    result.states = len(parents)
    result.seconds = time.perf_counter() - start
    result.cpu_seconds = time.process_time() - cpu
    if progress is not None:
        progress(result.states, 0, result.max_depth)
    return result


def _trace(parents: dict, k: object, model: Model) -> list[str]:
    """The labels from the initial state to the state of key k: concrete transitions, each taken from the
    concrete state its parent's class is represented by, so the trace replays as is."""
    steps: list[str] = []
    while True:
        parent, label, _ = parents[k]
        if parent is None:
            break
        steps.append(label)
        k = parent
    steps.append(model.initial_label())
    return list(reversed(steps))


def replay(
    protocol: str | Variant, config: Config, trace: list[str], *, mutation: str | None = None,
) -> tuple[World, list[Violation]]:
    """Re-execute a trace (as printed: first line is the start) and re-check the final state."""
    variant = protocol if isinstance(protocol, Variant) else get_variant(protocol, mutation)
    model = Model(variant, config)
    w = model.initial()
    steps = trace[1:] if trace and trace[0].startswith("start:") else trace
    for n, step in enumerate(steps, 1):
        for label, nxt in model.successors(w):
            if label == step:
                w = nxt
                break
        else:
            raise ValueError(f"step {n} ({step!r}) is not enabled in the replayed state")
    violations, _ = model.check(w)
    return w, violations


def happy_path(protocol: str | Variant = "bilateral", ranks: int = 2, *,
               mutation: str | None = None) -> tuple[list[tuple[str, Command]], World]:
    """The commands every process executes when nothing goes wrong (no crash, loss or timeout), in order,
    as (process, command), and the final state. The schedule is the explorer's first successor at each
    state: the lowest-numbered process with work executes, else the first message in flight arrives."""
    variant = protocol if isinstance(protocol, Variant) else get_variant(protocol, mutation)
    log: list[tuple[str, Command]] = []
    model = Model(variant, Config(ranks=ranks, crashes=False, message_loss=False, timeouts=False),
                  observe=lambda who, cmd: log.append((who, cmd)))
    w = model.initial()
    while True:
        busy = [i for i in range(model.procs) if w.pending[i]]
        if busy:
            _, w = model.execute(w, busy[0])
        elif w.net:
            _, w = model.deliver(w, 0)
        else:
            return log, w
