"""Random walks through bigger configurations than exhaustive search can cover (up to 6 ranks, several
epochs in a row, retries, retention), checking every property at every step -- with the same model and
the same library machines as the explorer."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from fito.model.explorer_model import Model
from fito.model.explorer_world import Config, World
from fito.model.protocols import get_variant

FAULTS = ("crash ", "net: lose ", "coord: timeout", "job restart")  # also "job restart, but ... zombie"
REACHED: dict[str, int] = {}  # protocol -> most commits after epoch 1 seen in one run (coverage check)


class ProtocolRun(RuleBasedStateMachine):
    protocol = "bilateral"

    def __init__(self) -> None:
        super().__init__()
        self.model: Model | None = None
        self.world: World | None = None
        self.trace: list[str] = []

    @initialize(ranks=st.integers(2, 6), epochs=st.integers(1, 4), keep=st.integers(1, 3),
                attempts=st.integers(1, 3), zombies=st.booleans())
    def setup(self, ranks: int, epochs: int, keep: int, attempts: int, zombies: bool) -> None:
        # zombie coordinators, fenced as the library does (token taken at start; see test_explorer)
        cfg = Config(ranks=ranks, epochs=epochs, keep=keep, attempts=attempts, zombies=zombies)
        self.model = Model(get_variant(self.protocol), cfg)
        self.world = self.model.initial()
        self.trace = [self.model.initial_label()]

    def _take(self, faults: bool, choice: int) -> None:
        assert self.model is not None and self.world is not None
        options = [(label, s) for label, s in self.model.successors(self.world) if label.startswith(FAULTS) == faults]
        if options:
            label, self.world = options[choice % len(options)]
            self.trace.append(label)

    @rule(choice=st.integers(0, 1 << 16), dice=st.integers(0, 19))
    def step(self, choice: int, dice: int) -> None:
        """Mostly progress (a process executes its next command, a message arrives, the next save begins);
        one step in twenty a fault (a crash, a lost message, a timeout, a job restart). More faults and
        no save ever completes in a random walk."""
        self._take(dice == 0, choice)
        assert self.world is not None
        REACHED[self.protocol] = max(REACHED.get(self.protocol, 0), len(self.world.ghost.committed) - 1)

    @invariant()
    def properties_hold(self) -> None:
        if self.model is None or self.world is None:
            return
        violations, _ = self.model.check(self.world)
        assert not violations, "\n".join([v.detail for v in violations] + self.trace)


class NaiveRun(ProtocolRun):
    protocol = "naive"


class PaperLiteralRun(ProtocolRun):
    protocol = "paper-literal"


SETTINGS = settings(max_examples=60, stateful_step_count=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def test_bilateral_holds_on_random_long_runs() -> None:
    run_state_machine_as_test(ProtocolRun, settings=SETTINGS)
    assert REACHED["bilateral"] >= 3  # the walks really went through several committed epochs


@pytest.mark.parametrize("machine", [NaiveRun, PaperLiteralRun])
def test_broken_protocols_are_caught_by_the_same_random_walks(machine: type[ProtocolRun]) -> None:
    no_shrink = settings(SETTINGS, phases=[Phase.explicit, Phase.generate])  # the explorer gives shortest traces
    with pytest.raises(AssertionError):
        run_state_machine_as_test(machine, settings=no_shrink)
