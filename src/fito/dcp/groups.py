"""Which ranks a `dcp.load` runs on, for the Reader's own collectives (its choice of step and its vote).

DCP's storage API never passes the process group to the storage layer, so a Reader that built a group over
the whole world inside `dcp.load(..., process_group=sub)` would wait for ranks that never come (until the
group's timeout). The Reader builds its transport on first use, from inside DCP's call, on the ranks of the
group DCP itself runs on: found on DCP's own `_DistWrapper` in the calling frames (private, so checked: if it
is not there, the whole world, as before)."""
from __future__ import annotations

import sys
from typing import Any

import torch.distributed as dist

from fito.commit.transport import LocalTransport, ProcessGroupTransport, Transport, default_transport

try:
    from torch.distributed.checkpoint.utils import _DistWrapper
except ImportError:  # pragma: no cover - another torch: no group to find, the world is used
    _DistWrapper = None

FRAMES = 12  # read_metadata is called 2-3 frames below DCP's _load_state_dict; a few more for wrappers


def dcp_wrapper() -> Any:
    """DCP's _DistWrapper of the dcp.load/dcp.save that is calling us, or None (called outside DCP)."""
    if _DistWrapper is None:
        return None
    frame = sys._getframe(1)
    for _ in range(FRAMES):
        if frame is None:
            return None
        for name in ("self", "distW"):
            found = frame.f_locals.get(name)
            if isinstance(found, _DistWrapper):
                return found
        frame = frame.f_back
    return None


def transport_for_dcp() -> Transport:
    """A transport over exactly the ranks of the calling DCP operation: none without collectives (no_dist),
    fito's own gloo group over the world for DCP's default group, or a gloo group over a subgroup's ranks
    (created by those ranks only: use_local_synchronization)."""
    wrapper = dcp_wrapper()
    if not (dist.is_available() and dist.is_initialized()) or (wrapper is not None and not wrapper.use_dist):
        return LocalTransport()
    group = None if wrapper is None else wrapper.group
    if group is None or dist.get_world_size(group) == dist.get_world_size():
        return default_transport()
    ranks = dist.get_process_group_ranks(group)
    return ProcessGroupTransport(dist.new_group(ranks, backend="gloo", use_local_synchronization=True), owned=True)
