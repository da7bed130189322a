"""What a model-checking search returns: a `Result` (sizes, completeness, a three-valued verdict per
property: holds / violated / unknown) holding one shortest `Counterexample` trace per violated property,
in text and JSON."""
from __future__ import annotations

from dataclasses import dataclass, field

from fito.model.explorer_properties import PROPERTIES
from fito.model.explorer_world import Config


@dataclass
class Counterexample:
    property: str
    trace: list[str]
    detail: str

    def render(self) -> str:
        lines = [f"counterexample to {self.property} ({len(self.trace)} steps):"]
        lines += [f"  {i:2d}. {step}" for i, step in enumerate(self.trace, 1)]
        lines.append(f"  => {self.detail}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"property": self.property, "trace": self.trace, "detail": self.detail}


@dataclass
class Result:
    protocol: str
    config: Config
    states: int = 0
    transitions: int = 0
    crash_images: int = 0
    max_depth: int = 0
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time (time.process_time): what a shared machine cannot inflate
    complete: bool = True
    violations: dict[str, Counterexample] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def verdict(self) -> str:
        """Three-valued: a search cut short without a violation decides nothing."""
        return "violated" if self.violations else "holds" if self.complete else "unknown"

    def property_verdict(self, name: str) -> str:
        return "violated" if name in self.violations else "holds" if self.complete else "unknown"

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol, "ranks": self.config.ranks, "attempts": self.config.attempts,
            "epochs": self.config.epochs,
            "keep": self.config.keep, "states": self.states, "transitions": self.transitions,
            "crash_images": self.crash_images, "max_depth": self.max_depth, "seconds": round(self.seconds, 3),
            "states_per_second": round(self.states / self.seconds, 1) if self.seconds else None,
            "cpu_seconds": round(self.cpu_seconds, 3), "symmetry": self.config.symmetry,
            "states_per_cpu_second": round(self.states / self.cpu_seconds, 1) if self.cpu_seconds else None,
            "complete": self.complete, "verdict": self.verdict,
            "ok": {"holds": True, "violated": False, "unknown": None}[self.verdict],
            "properties": {p: self.property_verdict(p) for p in PROPERTIES},
            "counterexamples": [c.to_json() for c in self.violations.values()],
        }
