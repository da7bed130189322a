"""How ranks talk during a save or restore: gather READY to the coordinator (rank 0), broadcast its word.
Messages are JSON bytes carried in uint8 tensors, never pickled objects.

Under torch.distributed (gloo), a rank that dies makes the collective fail on the survivors (the peer's
socket closes) or time out with the process group's timeout: either way an exception, never a hang. Every
collective here goes through one wrapper (`ProcessGroupTransport._run`) that turns that exception into a
PeerLostError naming the lost rank (`lost_ranks`: with 2 ranks the peer; with more, the ranks that do not
say they are alive through the rendezvous store within FITO_PEER_WAIT_MS). The save path reports it as a
SaveAbortedError (fito.ckpt.sharded_save), which also names the rank lost inside DCP's own collectives.

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
import re
import threading
import time
import weakref
from typing import Callable, Protocol, TypeVar

import torch
import torch.distributed as dist

from fito import knobs
from fito.errors import FitoError, PeerLostError

T = TypeVar("T")


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
        self._seq = 0  # collectives run so far: the same on every rank, so it names a failed one on all of them
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
        def run() -> list[bytes] | None:
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
        return self._run("gather", run)

    def broadcast(self, payload: bytes | None) -> bytes:
        def run() -> bytes:
            length = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
            dist.broadcast(length, src=self._src, group=self.group)
            buf = torch.zeros(int(length), dtype=torch.uint8)
            if self.rank == 0 and payload:
                buf[:] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
            if int(length):
                dist.broadcast(buf, src=self._src, group=self.group)
            return bytes(buf.numpy())
        return self._run("broadcast", run)

    def all_ok(self, ok: bool) -> bool:
        def run() -> bool:
            flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self.group)
            return bool(flag.item())
        return self._run("vote", run)

    def _run(self, what: str, collective: Callable[[], T]) -> T:
        """Every collective of fito's own: a failure of the group (a peer died, hung past the group's timeout,
        or its host went away) becomes a PeerLostError naming the rank; fito's own errors pass as they are."""
        self._seq += 1
        group = self.group  # a closed transport's FitoError, before any collective
        try:
            return collective()
        except FitoError:
            raise
        except Exception as exc:  # noqa: BLE001 - gloo raises RuntimeError (DistBackendError) for a lost peer
            raise self.lost_peer(exc, f"fito's {what} #{self._seq}", group) from exc

    def lost_peer(self, exc: BaseException, during: str, group: dist.ProcessGroup | None = None) -> PeerLostError:
        """The PeerLostError for `exc`, raised by a collective of this transport's group (fito's or DCP's)
        `during` something: which rank is gone, asked once per failure (bounded: FITO_PEER_WAIT_MS)."""
        group = self._group if group is None else group
        tag = f"{_group_name(group)}/{self._seq}"
        if self.world_size > 2 and group is self._group:
            # A survivor still blocked on this rank in the same collective learns of the loss only when this
            # rank's side of the group goes: without this it waited until this process exited, took the
            # rendezvous store with it, and blamed this rank. The group is dead either way (and fito's own).
            self.close()
        lost, note = lost_ranks(group, self.rank, self.world_size, tag)
        said = f"{type(exc).__name__}: {_first_words(str(exc))}"
        who = (f"rank {lost[0]}" if len(lost) == 1 else f"ranks {lost}") if lost else "another rank (which one could not be learned)"
        return PeerLostError(f"rank {self.rank} lost contact with {who} during {during}{note} ({said})", lost=lost, cause=said)


def lost_ranks(group: dist.ProcessGroup | None, rank: int, world_size: int, tag: str) -> tuple[list[int], str]:
    """The ranks of `group` that are gone after a collective failed on `rank`, and a note on how that was
    learned. With two ranks it is the peer. With more, every rank whose collective failed says it is alive
    under `tag` (the same failed collective on every rank) in the rendezvous store, and waits up to
    FITO_PEER_WAIT_MS for the others: the silent ones are named (a hung rank looks the same as a dead one).
    If the store itself is gone (it lives in rank 0's process when ranks start from MASTER_ADDR/PORT), rank 0
    is named as the likely one."""
    others = [r for r in range(world_size) if r != rank]
    if len(others) == 1:
        return others, ""
    try:
        store = dist.distributed_c10d._get_default_store()  # no public accessor; guarded below
    except Exception:  # noqa: BLE001 - another launcher, another torch: say we could not tell
        return [], " (no rendezvous store to ask which)"
    prefix = f"fito/alive/{tag}/"
    try:
        store.set(prefix + str(rank), b"1")
        deadline = time.monotonic() + knobs.peer_wait_s()
        silent = others
        while True:
            silent = [r for r in silent if not store.check([prefix + str(r)])]
            if not silent or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    except Exception:  # noqa: BLE001 - the store went with its host
        return ([0] if rank != 0 else []), " (the rendezvous store is unreachable too: its host, rank 0's process, is likely gone)"
    return silent, f" (silent for {knobs.peer_wait_s():g} s)" if silent else ""


def _first_words(text: str) -> str:
    """gloo's message without its source path and boilerplate: "Connection closed by peer [10.0.0.2]:4321"."""
    text = (text.splitlines() or [""])[0]
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text)
    return text.split(". This is typically")[0][:300]


def _group_name(group: dist.ProcessGroup | None) -> str:
    try:
        return str((group or dist.group.WORLD).group_name)
    except Exception:  # noqa: BLE001 - older torch: one name for all is still one exchange per failure
        return "group"


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
