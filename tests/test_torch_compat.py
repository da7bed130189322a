"""fito beside any torch >= 2.11: the behaviour fito relies on from torch's private or semi-private parts
(fito.torch_compat) and from DCP's replica deduplication, pinned on whatever torch runs the suite
(scripts/other_torch.sh runs the fast lane on a second version), and the install range itself."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from torch.distributed.checkpoint.planner import SavePlan

from fito.ckpt.exchange import adoptable
from fito.errors import StateMismatchError
from fito.plan.save import SavePlanner
from fito.torch_compat import loads_like_nn_module, loads_like_torch_optimizer, storage_use_count

ROOT = Path(__file__).resolve().parent.parent


def _local_plans(states: list[dict[str, torch.Tensor]]) -> list[SavePlan]:
    """Each "rank"'s local plan, made by fito's planner exactly as on that rank (no process group needed)."""
    plans = []
    for rank, state in enumerate(states):
        planner = SavePlanner()
        planner.set_up_planner(state, None, rank == 0)
        plans.append(planner.create_local_plan())
    return plans


def test_dcp_dedup_keeps_one_copy_of_each_replica_and_balances_the_writes() -> None:
    # Four replicated tensors of one size on two ranks, plus one rank-local name each.
    shared = {f"w{i}": torch.full((256,), float(i)) for i in range(4)}
    states = [{**shared, "only0": torch.ones(3)}, {**shared, "only1": torch.ones(3)}]
    coordinator = SavePlanner()
    coordinator.set_up_planner(states[0], None, True)
    global_plan, metadata = coordinator.create_global_plan(_local_plans(states))
    owners: dict[str, list[int]] = {}
    for rank, plan in enumerate(global_plan):
        for item in plan.items:
            owners.setdefault(item.index.fqn, []).append(rank)
    assert owners["only0"] == [0] and owners["only1"] == [1]
    replicas = {fqn: ranks for fqn, ranks in owners.items() if fqn.startswith("w")}
    assert sorted(replicas) == sorted(shared) and all(len(r) == 1 for r in replicas.values()), owners  # one copy each
    per_rank = [sum(1 for r in replicas.values() if r == [rank]) for rank in (0, 1)]
    assert per_rank == [2, 2], owners  # balanced, not all on the lowest rank
    assert set(metadata.state_dict_metadata) == set(shared) | {"only0", "only1"}


def test_differing_replicas_are_refused_before_dcp_deduplicates_them() -> None:
    states = [{"w": torch.zeros(8)}, {"w": torch.ones(8)}]  # one name, two values: DCP would keep one
    coordinator = SavePlanner()
    coordinator.set_up_planner(states[0], None, True)
    with pytest.raises(StateMismatchError, match="'w'.*rank 0 has .*rank 1 has"):
        coordinator.create_global_plan(_local_plans(states))


def test_storage_use_count_sees_a_held_view_and_its_release() -> None:
    t = torch.empty(16)
    before = storage_use_count(t)
    assert before == 0  # on every torch the suite runs on, the fast path (adoption) is available
    view = t[4:]
    assert (storage_use_count(t) or 0) > 0
    del view
    assert storage_use_count(t) == 0


def test_a_held_view_forbids_adoption() -> None:
    live, target = torch.nn.Parameter(torch.zeros(8)), torch.ones(8)
    assert adoptable(live, target)
    view = live.data[2:]  # somebody holds part of the live storage: swapping it would leave them stale
    assert not adoptable(live, target)
    del view
    held = target.view(2, 4)  # or part of the target's
    assert not adoptable(live, target)
    del held
    assert adoptable(live, target)


class _Overrides(torch.nn.Linear):
    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]


class _Extra(torch.nn.Linear):
    def get_extra_state(self) -> object:
        return {"x": 1}


def test_loads_like_nn_module_sees_overrides_extra_state_and_hooks() -> None:
    assert loads_like_nn_module(torch.nn.Linear(2, 2))
    assert not loads_like_nn_module(_Overrides(2, 2))
    assert not loads_like_nn_module(_Extra(2, 2))
    hooked = torch.nn.Linear(2, 2)
    hooked.register_load_state_dict_post_hook(lambda module, keys: None)
    assert not loads_like_nn_module(hooked)
    pre = torch.nn.Linear(2, 2)
    pre._register_load_state_dict_pre_hook(lambda *a, **k: None)
    assert not loads_like_nn_module(pre)


def test_the_torch_requirement_is_a_range_and_this_checkout_pins_the_wheel_on_disk() -> None:
    deps = re.findall(r'^\s+"(torch\b[^"]*)",', (ROOT / "pyproject.toml").read_text(), re.M)  # tomllib: 3.11+
    (req,) = [Requirement(d) for d in deps]
    for accepted in ("2.11.0", "2.12.1", "2.13.0", "2.14.1", "2.15.0"):
        assert req.specifier.contains(accepted), (str(req), accepted)
    assert not req.specifier.contains("2.10.0")
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins == ["torch==2.13.0"]
    readme_first = (ROOT / "README.md").read_text().split("```bash\n")[1].split("```", 1)[0].strip()
    install = readme_first.split(" && ")[0]
    assert install == "python3 -m pip install -e '.[test]' -c constraints.txt"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(install)}$", ci, re.M), "the CI installs as the README says"


class _SkipsInit(torch.optim.SGD):
    def __init__(self, params: object) -> None:  # never calls Optimizer.__init__: no hook dicts at all
        self.param_groups, self.state = [], {}


def test_loads_like_torch_optimizer_sees_hooks_overrides_and_missing_hook_dicts() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    assert loads_like_torch_optimizer(torch.optim.AdamW([w]))
    hooked = torch.optim.AdamW([w])
    hooked.register_load_state_dict_pre_hook(lambda opt, sd: None)
    assert not loads_like_torch_optimizer(hooked)
    post = torch.optim.AdamW([w])
    post.register_load_state_dict_post_hook(lambda opt: None)
    assert not loads_like_torch_optimizer(post)
    assert not loads_like_torch_optimizer(_SkipsInit([w]))  # unknown counts as "no": the careful path


def test_fitos_planners_have_the_signatures_dcp_checks_so_a_save_warns_nothing(tmp_path) -> None:
    """DCP inspects a planner's set_up_planner for its `storage_meta` parameter and warns at every save when it
    is missing: a save through the Checkpointer and through fito.dcp must raise no warning at all."""
    import warnings

    import torch.distributed.checkpoint as dcp

    import fito
    import fito.dcp
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "torch.distributed is disabled")  # one process without a group
        with fito.Checkpointer(tmp_path / "ck") as ck:
            ck.save(1, {"m": torch.nn.Linear(2, 2)})
        dcp.save({"w": torch.ones(3)}, storage_writer=fito.dcp.Writer(tmp_path / "dcp", 1),
                 planner=fito.dcp.SavePlanner(), no_dist=True)
