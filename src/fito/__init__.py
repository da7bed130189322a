"""fito: checkpoints that commit by protocol, not by clock.

The public API is imported lazily, so `fito --help` and the theory models start without loading torch."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Checkpointer": "fito.ckpt.checkpointer",
    "CheckpointManager": "fito.ckpt.manager",
    "SaveHandle": "fito.ckpt.handle",
    "DataPosition": "fito.ckpt.state",
    "RNGState": "fito.ckpt.state",
}
_ERRORS = [
    "CheckpointCorruptError", "CheckpointUnreadableError", "FitoError", "NoCommittedEpochError", "SaveAbortedError", "SaveInProgressError",
    "StaleFenceError", "StateMismatchError", "UnsafeCheckpointError", "ValidationError",
]
__all__ = [*_API, *_ERRORS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("fito.errors"), name)
    raise AttributeError(f"module 'fito' has no attribute {name!r}")
