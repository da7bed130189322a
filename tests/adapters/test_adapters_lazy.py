"""The adapters import their framework only when imported themselves, and their public names are pinned."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_importing_fito_and_the_adapters_package_loads_no_framework() -> None:
    code = ("import sys, fito, fito.adapters; fito.Checkpointer; fito.CheckpointManager; import fito.dcp; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'transformers', 'accelerate', 'torchtitan')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("module, names", [
    ("fito.adapters.lightning", ["FitoCheckpoint", "FitoDDPStrategy", "FitoModelParallelStrategy",
                                 "FitoSingleDeviceStrategy", "FitoStrategyMixin"]),
    ("fito.adapters.hf", ["FitoTrainer", "FitoTrainerMixin"]),
    ("fito.adapters.torchtitan", ["FitoCheckpointManager", "FlatOptimizerState"]),
])
def test_adapter_public_names(module: str, names: list[str]) -> None:
    framework = {"lightning": "lightning", "hf": "transformers", "torchtitan": "torchtitan"}[module.rsplit(".", 1)[-1]]
    pytest.importorskip(framework, reason=f"{framework} is not installed")
    mod = __import__(module, fromlist=["__all__"])
    assert mod.__all__ == names
    for n in names:
        assert getattr(mod, n)
