"""fito as a storage layer for torch.distributed.checkpoint: the same commit protocol and verify-before-touch
restore for `dcp.save`, `dcp.async_save` and `dcp.load`.

    dcp.save(state, storage_writer=fito.dcp.Writer(root, step))   # DCP's planners: one argument changed
    dcp.load(state, storage_reader=fito.dcp.Reader(root))
    dcp.save(state, storage_writer=fito.dcp.Writer(root, step), planner=fito.dcp.SavePlanner())  # every check
    dcp.load(state, storage_reader=fito.dcp.Reader(root), planner=fito.dcp.LoadPlanner())

`fito.dcp.save(state, storage_writer=fito.dcp.Writer(root, step))` is dcp.save whose failures are fito's
errors on every rank (a rank lost inside DCP's own collectives included; see fito.dcp.saving).

See docs/dcp.md for what is verified and how this differs from stock DCP."""
from fito.dcp.reader import Reader
from fito.dcp.saving import save
from fito.dcp.writer import Writer
from fito.plan.load import LoadPlanner
from fito.plan.save import SavePlanner

__all__ = ["LoadPlanner", "Reader", "SavePlanner", "Writer", "save"]
