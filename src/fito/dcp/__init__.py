"""fito as a storage layer for torch.distributed.checkpoint: the same commit protocol and verify-before-touch
restore for `dcp.save`, `dcp.async_save` and `dcp.load`.

    dcp.save(state, storage_writer=fito.dcp.Writer(root, step))   # DCP's planners: one argument changed
    dcp.load(state, storage_reader=fito.dcp.Reader(root))
    dcp.save(state, storage_writer=fito.dcp.Writer(root, step), planner=fito.dcp.SavePlanner())  # every check
    dcp.load(state, storage_reader=fito.dcp.Reader(root), planner=fito.dcp.LoadPlanner())

See docs/dcp.md for what is verified and how this differs from stock DCP."""
from fito.dcp.reader import Reader
from fito.dcp.writer import Writer
from fito.plan.load import LoadPlanner
from fito.plan.save import SavePlanner

__all__ = ["LoadPlanner", "Reader", "SavePlanner", "Writer"]
