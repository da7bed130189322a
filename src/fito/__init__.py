"""fito: checkpoints that commit by protocol, not by clock.

The public API is imported lazily, so `fito --help` and the theory models start without loading torch,
and `fito.Checkpointer` loads no optional back-end (etcd). Distribution name: fito-ckpt."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public names, as a literal list (tests/test_public_api.py pins it).
__all__ = [
    "Checkpointer",
    "CheckpointManager",
    "SaveHandle",
    "DataPosition",
    "RNGState",
    "load_tensors",
    # errors (fito.errors): every class fito raises on purpose
    "FitoError",
    "CheckpointCorruptError",
    "UnsafeCheckpointError",
    "CheckpointUnreadableError",
    "NoCommittedEpochError",
    "SaveAbortedError",
    "PeerLostError",
    "SaveInProgressError",
    "StaleFenceError",
    "StateMismatchError",
    "RestoreFailedError",
    "GarbageCollectionError",
    "RetireRefusedError",
    "DecisionLogMissingError",
    "DecisionLogDamagedError",
    "DecisionLogLockedError",
    "DecisionLogReadOnlyError",
    "ValidationError",
    "CoordinationUnavailableError",
    "EpochConflictError",
    "EpochFencedError",
    "EpochMismatchError",
    "__version__",
]

_API = {
    "Checkpointer": "fito.ckpt.checkpointer",
    "CheckpointManager": "fito.ckpt.manager",
    "SaveHandle": "fito.ckpt.handle",
    "DataPosition": "fito.ckpt.state",
    "RNGState": "fito.ckpt.state",
    "load_tensors": "fito.export.tensors",
}
_SUBPACKAGES = ("coord",)  # `fito.coord.etcd.EtcdDecisionStore` works after a bare `import fito`


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
    elif name in __all__:
        value = getattr(importlib.import_module("fito.errors"), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"fito.{name}")
    else:
        raise AttributeError(f"module 'fito' has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
