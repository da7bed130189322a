"""The checkpoint system: gather torch state into epoch-tagged units, run the protocol, restore strictly."""
from fito.ckpt.checkpointer import Checkpointer
from fito.ckpt.state import DataPosition, RNGState

__all__ = ["Checkpointer", "DataPosition", "RNGState"]
