"""What the §6 experiment restores at step t: the correct tuple, the mixed tuples (type violations: m from
t-1, v from far earlier, stale weights, stale data position, moments zeroed with the step kept) and the
harmless baselines (a deliberate optimizer reset, a 1-ulp nudge, a reshuffled data order)."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from fito.model.epoch_typed import EpochTypedState, Tagged
from fito.model.skew_problem import SkewConfig


def _ulp_nudge(state: EpochTypedState) -> EpochTypedState:
    comps = dict(state.components)
    w = state.components["theta"]
    comps["theta"] = Tagged([torch.nextafter(t, torch.full_like(t, math.inf)) for t in w.value], w.epoch)
    return EpochTypedState(comps)


def _zero_moments(state: EpochTypedState, *, keep_step: bool) -> EpochTypedState:
    """m = v = 0. With the step counter kept this is the silent re-init of a loader that dropped the
    moments: zeros reflect epoch 0 while the step says t, a mixed tuple. With the step reset as well it
    is AdamW's own valid starting state at the current weights (bias correction restarts too)."""
    comps = dict(state.components)
    e = state.components["step"].epoch
    tag = 0 if keep_step else e
    comps["m"] = Tagged([torch.zeros_like(t) for t in state.components["m"].value], tag)
    comps["v"] = Tagged([torch.zeros_like(t) for t in state.components["v"].value], tag)
    if not keep_step:
        comps["step"] = Tagged(0.0, e)
    return EpochTypedState(comps)


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str           # "correct", "mix" (a type violation) or "noise" (a harmless baseline)
    description: str


def variants(cfg: SkewConfig) -> list[Variant]:
    t = cfg.restore_step
    return [
        Variant("correct", "correct", f"every component from step {t}"),
        Variant("m_prev", "mix", f"m from step {t - 1} (Example 6.6)"),
        Variant("v_stale", "mix", f"v from step {t - cfg.v_lag}"),
        Variant("weights_stale", "mix", f"weights from step {t - 1}, optimizer from {t}"),
        Variant("data_stale", "mix", f"data position from step {t - cfg.data_lag}"),
        Variant("zero_opt_step_kept", "mix", f"m = v = 0 (silent re-init) with step counter {t} kept"),
        Variant("opt_reset", "noise", "m = v = 0 and step = 0: a deliberate, bias-corrected optimizer reset"),
        Variant("ulp_nudge", "noise", "weights moved by 1 ulp"),
        Variant("reshuffle", "noise", "same state, data order reshuffled after the restore"),
    ]


def build_variant(name: str, cfg: SkewConfig, history: Mapping[int, EpochTypedState]) -> tuple[EpochTypedState, int]:
    """The state to restore for a variant, and the shuffle seed of the data order afterwards."""
    t = cfg.restore_step
    s = history[t]
    table: dict[str, Callable[[], tuple[EpochTypedState, int]]] = {
        "correct": lambda: (s, 0),
        "m_prev": lambda: (s.mixed_with(history, {"m": t - 1}), 0),
        "v_stale": lambda: (s.mixed_with(history, {"v": t - cfg.v_lag}), 0),
        "weights_stale": lambda: (s.mixed_with(history, {"theta": t - 1}), 0),
        "data_stale": lambda: (s.mixed_with(history, {"data_position": t - cfg.data_lag}), 0),
        "zero_opt_step_kept": lambda: (_zero_moments(s, keep_step=True), 0),
        "opt_reset": lambda: (_zero_moments(s, keep_step=False), 0),
        "ulp_nudge": lambda: (_ulp_nudge(s), 0),
        "reshuffle": lambda: (s, 1),
    }
    if name not in table:
        raise ValueError(f"unknown variant {name!r}")
    return table[name]()
