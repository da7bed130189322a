"""The checkpoint system: gather torch state into epoch-tagged units, run the protocol, restore strictly."""
from fito.ckpt.checkpointer import Checkpointer
from fito.ckpt.handle import SaveHandle
from fito.ckpt.manager import CheckpointManager
from fito.ckpt.state import DataPosition, RNGState

__all__ = ["CheckpointManager", "Checkpointer", "DataPosition", "RNGState", "SaveHandle"]
