"""Torch-aware, pure planning: state -> DCP items (fito's save and load planners), restore checks, JSON for
non-tensor values. No I/O: the executor (fito.dcp) touches storage."""
from fito.plan.load import LoadPlanner
from fito.plan.save import SavePlanner

__all__ = ["LoadPlanner", "SavePlanner"]
