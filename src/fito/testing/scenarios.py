"""Scenario groups run inside N gloo ranks, reporting JSON lines: the rank side (`start`, `emit`, `run_group`,
`rank_main`)
and the test side (`run_scenarios`). One spawned group runs many scenarios, because starting processes that
import torch costs seconds each; a scenario that raises is reported and the next one runs."""
from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fito.testing.dist import run_ranks

Scenario = Callable[[Path], None]


def start() -> tuple[int, int]:
    """Join the gloo group the launcher set up; return (rank, world size)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    return dist.get_rank(), dist.get_world_size()


def emit(scenario: str, **fields: Any) -> None:
    """One JSON line on stdout, read back by `run_scenarios`."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    print(json.dumps({"scenario": scenario, "rank": rank, **fields}), flush=True)


def run_group(groups: Mapping[str, Sequence[Scenario]]) -> None:
    """Run the group named by argv[1] over the directory argv[2], then leave the process group."""
    import torch.distributed as dist

    group, tmp = sys.argv[1], Path(sys.argv[2])
    for scenario in groups[group]:
        try:
            scenario(tmp)
        except BaseException as exc:  # noqa: BLE001 - report and go on with the next scenario
            emit("error", where=getattr(scenario, "__name__", "?"), error=f"{type(exc).__name__}: {exc}"[-2000:],
                 traceback=traceback.format_exc()[-3000:])
    dist.destroy_process_group()


def rank_main(groups: Mapping[str, Sequence[Scenario]], *namespaces: dict[str, Any]) -> None:
    """A rank module's entry: join the group, set RANK and WORLD in each namespace (the `globals()` of the
    modules whose scenarios read them), then run the group named on the command line."""
    rank, world = start()
    for namespace in namespaces:
        namespace["RANK"], namespace["WORLD"] = rank, world
    run_group(groups)


def run_scenarios(module: str, group: str, tmp: Path, world: int, *, here: Path, env: Mapping[str, str] = {},
                  timeout: float = 300.0) -> dict[str, dict[int, dict[str, Any]]]:
    """Run `module`'s `group` on `world` ranks; return {scenario: {rank: event}} (plus "_exit"), failing the
    test with every rank's reported error if any scenario raised."""
    full_env = {"PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]), **env}
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for r in run_ranks(module, [group, str(tmp)], world, timeout=timeout, env=full_env):
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                out.setdefault(event["scenario"], {})[event["rank"]] = event
        out.setdefault("_exit", {})[r.rank] = {"code": r.returncode, "stderr": r.stderr[-3000:]}
    errors = out.get("error")
    assert not errors, json.dumps(errors, indent=1)[:8000]
    return out
