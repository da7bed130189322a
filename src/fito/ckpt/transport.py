"""How ranks talk during a save or restore: gather READY to the coordinator (rank 0), broadcast its word.
Messages are JSON bytes carried in uint8 tensors, never pickled objects.

Under torch.distributed (gloo), a rank that dies makes the collective fail on the survivors (the peer's
socket closes) or time out with the process group's timeout: either way an exception, never a hang.

A group fito created is destroyed by `close()` (Checkpointer.close): its last reference is dropped in a
background thread (the C++ destructor joins the gloo workers, 20 ms here, without the GIL), which Python
joins before it finalizes (a non-daemon thread), so the workers are gone while the interpreter is whole.
Left to interpreter exit, a worker that is still letting go of a finished collective (it drops the last
reference to the collective's tensors, which takes the GIL) is ended by Python's finalization inside a C++
destructor, and the process aborts after its work is done ("terminate called without an active
exception"), more often the busier the machine. A program that never closes its
Checkpointer (or whose Checkpointer only an exception's traceback still holds) gets the same done at exit:
every group fito created and still holds is destroyed by an atexit hook, which runs before finalization."""
from __future__ import annotations

import atexit
import gc
import threading
import weakref
from typing import Protocol

import torch
import torch.distributed as dist

from fito.errors import FitoError


class Transport(Protocol):
    rank: int
    world_size: int

    def gather(self, payload: bytes) -> list[bytes] | None:
        """Every rank's payload on rank 0 (in rank order); None elsewhere."""

    def broadcast(self, payload: bytes | None) -> bytes:
        """Rank 0's payload on every rank."""

    def all_ok(self, ok: bool) -> bool:
        """True on every rank iff it is True on every rank."""

    def close(self) -> None:
        """Release what the transport created (every rank, after its last collective); idempotent."""


class LocalTransport:
    rank = 0
    world_size = 1

    def gather(self, payload: bytes) -> list[bytes] | None:
        return [payload]

    def broadcast(self, payload: bytes | None) -> bytes:
        assert payload is not None
        return payload

    def all_ok(self, ok: bool) -> bool:
        return ok

    def close(self) -> None:
        pass


class ProcessGroupTransport:
    """`owned`: the group was created for this transport, and close() destroys it (a caller's group is left
    alone). After that every collective raises: a group of None would silently mean the default group."""

    def __init__(self, group: dist.ProcessGroup | None = None, *, owned: bool = False) -> None:
        self._group = group
        self.owned = owned
        self.closed = False
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._src = 0 if group is None else dist.get_global_rank(group, 0)  # broadcast's src is a global rank
        if owned:
            _OWNED.add(self)

    @property
    def group(self) -> dist.ProcessGroup | None:
        if self.closed:
            raise FitoError("closed: close() destroyed the process group fito created for this Checkpointer (or "
                            "CheckpointManager); create a new one on every rank to save or restore again")
        return self._group

    def close(self, *, background: bool = True) -> None:
        """Destroy the group fito created; its C++ object goes in a background thread unless `background`
        is False (at exit, where no new thread would be joined)."""
        if not self.owned or self.closed:
            return  # a caller's group stays usable
        holder, self._group, self.closed = [self._group], None, True  # never a local: the thread drops the last ref
        if dist.is_initialized():
            try:
                dist.destroy_process_group(holder[0])  # drops torch's references to it
            except ValueError:
                pass  # already destroyed (dist.destroy_process_group() of every group ran first)
        if background:
            release = threading.Thread(target=holder.clear, name="fito-release-group")  # not a daemon: joined at exit
            _RELEASING[:] = [t for t in _RELEASING if t.is_alive()] + [release]
            release.start()
        else:
            holder.clear()  # the C++ group is destroyed now and joins its worker threads

    def gather(self, payload: bytes) -> list[bytes] | None:
        length = torch.tensor([len(payload)], dtype=torch.int64)
        lengths = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(lengths, length, group=self.group)
        longest = max(int(n) for n in lengths)
        buf = torch.zeros(longest, dtype=torch.uint8)
        buf[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else buf[:0]
        bufs = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(bufs, buf, group=self.group)
        if self.rank != 0:
            return None
        return [bytes(b[: int(n)].numpy()) for b, n in zip(bufs, lengths)]

    def broadcast(self, payload: bytes | None) -> bytes:
        length = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
        dist.broadcast(length, src=self._src, group=self.group)
        buf = torch.zeros(int(length), dtype=torch.uint8)
        if self.rank == 0 and payload:
            buf[:] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        if int(length):
            dist.broadcast(buf, src=self._src, group=self.group)
        return bytes(buf.numpy())

    def all_ok(self, ok: bool) -> bool:
        flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
        return bool(flag.item())


def default_transport(group: dist.ProcessGroup | None = None) -> Transport:
    """Under torch.distributed, checkpoint traffic gets its own gloo group (created collectively here), so a
    background save's collectives never interleave with the training loop's on the same group."""
    if dist.is_available() and dist.is_initialized():
        if group is not None:
            return ProcessGroupTransport(group)
        return ProcessGroupTransport(dist.new_group(backend="gloo"), owned=True)
    return LocalTransport()


_OWNED: "weakref.WeakSet[ProcessGroupTransport]" = weakref.WeakSet()
_RELEASING: list[threading.Thread] = []  # closed groups being destroyed in the background


def wait_released() -> None:
    """Return once every group close() handed to the background is destroyed (its gloo threads joined)."""
    while _RELEASING:
        _RELEASING.pop().join()


@atexit.register
def _close_owned() -> None:
    """At exit, while the interpreter is whole: destroy the groups fito created and nobody closed. The
    collections free what only reference cycles still hold (an exception's traceback keeping a Checkpointer,
    or DCP's frames keeping its group), so each group's last reference goes now, not in finalization."""
    wait_released()
    if not _OWNED:
        return
    gc.collect()
    for transport in list(_OWNED):
        try:
            transport.close(background=False)
        except Exception:  # noqa: BLE001 - a broken group (a peer died): best effort, the process is ending
            pass
    gc.collect()
