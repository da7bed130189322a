"""fito: checkpoints that commit by protocol, not by clock."""
__version__ = "0.1.0"
