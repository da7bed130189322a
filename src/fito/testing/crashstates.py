"""Crash-state exploration of a real save (in the spirit of ALICE, Pillai et al., OSDI 2014).

1. Record: run a real `fito.Checkpointer.save` handed a `RecordingStorage` over a real `LocalFS` and a
   `RecordingStore` over the real decision store (its public `storage` and `store` arguments;
   `fito.testing.recording`): every file-system operation with its bytes, each durable SQLite transaction
   as one atomic, durable operation at its place in the log.
2. Generate: for every prefix of the log, every disk the one POSIX crash model (`fito.model.posix_crash`)
   allows after a power failure at that point.
3. Check: materialise each distinct crash state in a fresh directory (the decision log is rebuilt by
   re-publishing the decisions that were durable), run the real `restore`, and check all-or-nothing.

The generator is independent of fito: `benchmarks/dcp_crash_states.py` feeds it torch.distributed.checkpoint.
Several ranks' recordings of one save are combined in `fito.testing.crashcuts`."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fito.commit.decision import read_committed
from fito.coord.base import Decision
from fito.coord.sqlite import SqliteDecisionStore
from fito.model.posix_crash import DIR, CrashState, Op, each_crash_state
from fito.storage.localfs import LocalFS
from fito.testing.recording import Recording, RecordingStorage, RecordingStore, store_rows

StorageFactory = Callable[[LocalFS, Recording], RecordingStorage]


def snapshot_dir(root: Path) -> dict[str, Any]:
    """A directory tree as {relative path: DIR | bytes} (the durable starting point of a recording)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[(Path(dirpath) / d).relative_to(root).as_posix()] = DIR
        for f in filenames:
            out[(Path(dirpath) / f).relative_to(root).as_posix()] = (Path(dirpath) / f).read_bytes()
    return out


def materialise(state: CrashState, target: Path, *, decision_log: str | None = SqliteDecisionStore.FILENAME) -> None:
    """Write the crash state's files into `target`, and rebuild the decision log as it was durable."""
    target.mkdir(parents=True, exist_ok=True)
    for path, content in state.files:
        p = target / path
        if content == DIR:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
    if decision_log is not None:
        store = SqliteDecisionStore(target / decision_log, replace_lost=True)  # rebuilt beside the files on purpose
        try:
            fence = store.acquire_fence()
            for epoch, attempt, outcome, manifest, manifest_hash, _retired, decision_id in state.store:
                store.publish(Decision(epoch, attempt, outcome, manifest, manifest_hash, decision_id=decision_id), fence)
            for epoch, attempt, _o, _m, _h, retired, _id in state.store:
                if retired:
                    store.retire(epoch, attempt, fence)
        finally:
            store.close()


# ---------------------------------------------------------------- fito's save, end to end
@dataclass
class Report:
    ops: int = 0
    crash_states: int = 0
    violations: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # "restored step 1" / "error: ..." -> count
    crash_points: int = 0  # power-cut positions examined (after 0..ops operations)
    violating_points: set[int] = field(default_factory=set)  # positions where some crash state is wrong
    record_seconds: float = 0.0
    check_seconds: float = 0.0

    @property
    def states_per_second(self) -> float:
        return self.crash_states / self.check_seconds if self.check_seconds else 0.0

    def to_json(self) -> dict:
        return {"ops": self.ops, "crash_states": self.crash_states, "violations": len(self.violations),
                "crash_points": self.crash_points, "crash_points_with_violation": len(self.violating_points),
                "outcomes": self.outcomes, "check_seconds": round(self.check_seconds, 3),
                "states_per_second": round(self.states_per_second, 1), "examples": self.violations[:5]}


def training_state(step: int, *, size: int = 16) -> dict[str, Any]:
    """A small state whose every value says which step it belongs to: any mix is visible."""
    import torch

    return {
        "model": {"weight": torch.full((size, size), float(step)), "bias": torch.full((size,), float(step))},
        "optimizer": {"exp_avg": torch.full((size,), float(step)), "exp_avg_sq": torch.full((size,), float(step)),
                      "step": torch.tensor(step, dtype=torch.int64)},
        "data_position": step,
    }


def steps_in(state: dict[str, Any]) -> set[float]:
    """Every step value found in a state built by `training_state` (one value iff the state is whole)."""
    import torch

    found: set[float] = set()

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, torch.Tensor):
            found.update(float(x) for x in obj.reshape(-1).unique().tolist())
        else:
            found.add(float(obj))

    walk(state)
    return found


def record_fito_save(workdir: Path, *, keep: int = 1, size: int = 16, steps: tuple[int, ...] = (1, 2),
                     fs_factory: StorageFactory = RecordingStorage) -> tuple[dict[str, Any], list[Op], tuple]:
    """Save steps[:-1] normally (the durable starting point), then record the save of steps[-1] by a
    Checkpointer handed the recording storage and store (the decision log lives outside the root: the
    crash states model it as its own atomic, durable transactions)."""
    from fito.ckpt import Checkpointer

    root, db = workdir / "ckpt", workdir / "decisions-recorded.sqlite"
    store = SqliteDecisionStore(db)
    rec = Recording()
    try:
        with Checkpointer(root, keep=keep, store=store, progress=False) as ck:
            for s in steps[:-1]:
                ck.save(s, training_state(s, size=size))
        initial, initial_store = snapshot_dir(root), store_rows(store)
        with Checkpointer(fs_factory(LocalFS(root), rec), keep=keep, store=RecordingStore(store, rec),
                          progress=False) as ck:
            ck.save(steps[-1], training_state(steps[-1], size=size))
    finally:
        store.close()
    return initial, rec.ops, initial_store


def check_fito_crash_states(workdir: Path | None = None, *, keep: int = 1, size: int = 16,
                            steps: tuple[int, ...] = (1, 2),
                            fs_factory: StorageFactory = RecordingStorage,
                            progress: Callable[[int], None] | None = None,
                            max_violations: int | None = None) -> Report:
    """Record a real save, then run the real restore on every crash state and check all-or-nothing:
    the loaded state is wholly the newest durably committed step, and a failed restore touches nothing."""
    import torch  # noqa: F401  (restore needs it; imported here to keep `fito check` light)

    from fito.ckpt import Checkpointer

    own = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fito-crash-")) if own else workdir
    report = Report()
    try:
        t0 = time.perf_counter()
        initial, log, initial_store = record_fito_save(workdir, keep=keep, size=size, steps=steps, fs_factory=fs_factory)
        report.ops = len(log)
        report.record_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        verdicts: dict[tuple, str] = {}  # distinct crash state -> problem ("" when fine)
        for state in each_crash_state(initial, log, initial_store, dedupe=False):
            key = (state.files, state.store)
            report.crash_points = max(report.crash_points, state.op_index + 1)
            if key in verdicts:
                if verdicts[key]:
                    report.violating_points.add(state.op_index)
                continue
            target = workdir / f"crash-{len(verdicts):05d}"
            materialise(state, target)
            committed = [d.epoch for d in read_committed(target)]  # the library's one rule, on the durable log
            expected = committed[-1] if committed else None
            into = training_state(-1, size=size)
            try:
                with Checkpointer(target, progress=False) as ck:
                    got: int | None = ck.restore(into)
                outcome = f"restored step {got}"
            except Exception as exc:  # noqa: BLE001 - a loud failure is an outcome to classify
                got, outcome = None, f"error: {type(exc).__name__}"
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
            values = steps_in(into)
            problem = ""
            if got is None and values != {-1.0}:
                problem = f"failed restore modified the caller's state (values {sorted(values)})"
            elif got is not None and values != {float(got)}:
                problem = f"restore returned step {got} but the state holds values {sorted(values)} (a mix)"
            elif got != expected:
                problem = f"restore gave {outcome!r}, but step {expected} is durably committed"
            else:
                problem = _check_older_steps(Checkpointer, target, [c for c in committed if c != expected], size)
            verdicts[key] = problem
            if problem:
                report.violations.append(f"{state.describe(log)} -> {problem}")
                report.violating_points.add(state.op_index)
            report.crash_states += 1
            shutil.rmtree(target)
            if progress:
                progress(report.crash_states)
            if max_violations is not None and len(report.violations) >= max_violations:
                break
        report.check_seconds = time.perf_counter() - t0
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _check_older_steps(checkpointer: Any, target: Path, steps: list[int], size: int) -> str:
    """Every other committed, not retired step must restore whole when asked for by number."""
    for s in steps:
        into = training_state(-1, size=size)
        try:
            with checkpointer(target, progress=False) as ck:
                got = ck.restore(into, step=s)
        except Exception as exc:  # noqa: BLE001
            return f"restore(step={s}) of a committed, kept step failed: {type(exc).__name__}: {exc}"
        if got != s or steps_in(into) != {float(s)}:
            return f"restore(step={s}) returned {got} with values {sorted(steps_in(into))}"
    return ""
