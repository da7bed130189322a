"""fito: checkpoints that commit by protocol, not by clock."""
__version__ = "0.1.0"

from fito.ckpt import CheckpointManager, Checkpointer, DataPosition, RNGState, SaveHandle  # noqa: E402
from fito.errors import (  # noqa: E402
    CheckpointCorruptError, FitoError, NoCommittedEpochError, SaveAbortedError, SaveInProgressError,
    StaleFenceError, StateMismatchError, UnsafeCheckpointError, ValidationError,
)

__all__ = [
    "CheckpointManager", "Checkpointer", "CheckpointCorruptError", "DataPosition", "SaveHandle", "FitoError", "NoCommittedEpochError", "RNGState",
    "SaveAbortedError", "SaveInProgressError", "StaleFenceError", "StateMismatchError", "UnsafeCheckpointError", "ValidationError", "__version__",
]
