"""fito: checkpoints that commit by protocol, not by clock."""
__version__ = "0.1.0"

from fito.ckpt import Checkpointer, DataPosition, RNGState  # noqa: E402
from fito.errors import (  # noqa: E402
    CheckpointCorruptError, FitoError, NoCommittedEpochError, SaveAbortedError, SaveInProgressError,
    StaleFenceError, StateMismatchError, UnsafeCheckpointError,
)

__all__ = [
    "Checkpointer", "CheckpointCorruptError", "DataPosition", "FitoError", "NoCommittedEpochError", "RNGState",
    "SaveAbortedError", "SaveInProgressError", "StaleFenceError", "StateMismatchError", "UnsafeCheckpointError", "__version__",
]
