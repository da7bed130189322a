"""Count independently persisted units of a sharded training state (§5.4 and correction 2 (docs/corrections.md)).

The paper asserts n ~ 4000 for a 70B model with TP 8, PP 4, DP 64 from the list "weight shards,
m and v shards, gradient buffers, per-rank RNG states, data-iterator positions, metadata". Counting
that list literally gives 2,241; ~4k appears only if every rank keeps its own data-iterator state
(4,225) or if the write and the fsync of each unit are counted as separate persistence steps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Parallelism:
    """Model size and layout. ZeRO stage s shards optimizer state (s >= 1), gradients (s >= 2)
    and weights (s = 3) across the data-parallel replicas as well."""

    params: float = 70e9
    tp: int = 8
    pp: int = 4
    dp: int = 64
    zero: int = 0
    data_state_per_rank: bool = False  # one iterator position per DP replica (default) or per rank
    split_write_fsync: bool = False    # count write and fsync of each unit as two persistence steps
    weight_bytes: int = 2              # bf16 weights
    grad_bytes: int = 2                # bf16 gradient buffers
    moment_bytes: int = 4              # fp32 m and v

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {self.zero}")
        if self.params <= 0:
            raise ValueError("params must be positive")

    @property
    def ranks(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def model_shards(self) -> int:
        """Distinct slices of the model: one per (tensor, pipeline) coordinate."""
        return self.tp * self.pp


@dataclass(frozen=True)
class UnitLine:
    component: str
    units: int
    rule: str
    bytes_per_unit: float


@dataclass
class UnitCount:
    layout: Parallelism
    lines: list[UnitLine] = field(default_factory=list)

    @property
    def persistence_units(self) -> int:
        return sum(line.units for line in self.lines)

    @property
    def persistence_steps(self) -> int:
        """Units, or twice the units when write and fsync are counted separately."""
        return self.persistence_units * (2 if self.layout.split_write_fsync else 1)

    def to_dict(self) -> dict[str, object]:
        return {"layout": asdict(self.layout), "lines": [asdict(x) for x in self.lines],
                "persistence_units": self.persistence_units, "persistence_steps": self.persistence_steps}


def count_units(layout: Parallelism) -> UnitCount:
    """Component-by-component count; the rule column says why each number is what it is."""
    shards = layout.model_shards
    per_slice = layout.params / shards

    def sharded(stage: int, name: str, nbytes: int) -> UnitLine:
        if layout.zero >= stage:
            units = shards * layout.dp
            return UnitLine(name, units, f"TP*PP*DP (ZeRO-{layout.zero} shards it over DP)",
                            per_slice * nbytes / layout.dp)
        return UnitLine(name, shards, "TP*PP (DP replicas are copies; one is saved)", per_slice * nbytes)

    count = UnitCount(layout)
    count.lines.append(sharded(3, "weight shards", layout.weight_bytes))
    count.lines.append(sharded(1, "first moment m", layout.moment_bytes))
    count.lines.append(sharded(1, "second moment v", layout.moment_bytes))
    count.lines.append(sharded(2, "gradient buffers", layout.grad_bytes))
    count.lines.append(UnitLine("RNG states", layout.ranks, "one per rank (TP*PP*DP)", 5_056))
    if layout.data_state_per_rank:
        count.lines.append(UnitLine("data-iterator positions", layout.ranks, "one per rank (TP*PP*DP)", 64))
    else:
        count.lines.append(UnitLine("data-iterator positions", layout.dp, "one per DP replica", 64))
    count.lines.append(UnitLine("metadata record", 1, "one manifest per checkpoint", 4_096))
    return count
