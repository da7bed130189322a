"""torch_checkpointing (PyPI 0.1.1), the peer beside DCP in benchmarks/sharded.py and checkpoint_io.py: whether it
runs here, a manager configured as documented except where it cannot run on this machine, and a load as a
user resumes. Not a dependency of fito: `pip install torch_checkpointing==0.1.1 --no-deps` (it needs torch>=2.11,
numpy, safetensors>=0.4.3, typing_extensions)."""
from __future__ import annotations

from pathlib import Path


def tc_missing() -> str | None:
    """Why torch_checkpointing cannot run here, or None."""
    try:
        import torch_checkpointing  # noqa: F401
    except ImportError as exc:
        return f"not runnable: {exc}"
    return None


def tc_manager(reshard: bool = False):  # type: ignore[no-untyped-def]
    """A synchronous CheckpointManager as documented, O_DIRECT off (its default raises EINVAL at the close of
    every file whose last write is unaligned, on this ext4). `reshard`: model and optim declare its
    DefaultResharder, which makes it save the metadata a load on another world size needs. Not used here: in
    0.1.1 that metadata is gathered through tensors on device="cuda" (metadata_manager.py,
    _all_gather_pickled_data), so a CPU-only torch raises "Torch not compiled with CUDA enabled" at the save."""
    from torch_checkpointing import CheckpointManager, ItemSpec
    from torch_checkpointing.config import SyncCheckpointSaverConfig
    from torch_checkpointing.default_resharder import DefaultResharder
    from torch_checkpointing.storage.filesystem import LocalFileSystemStorageConfig

    items = {k: ItemSpec(resharder=DefaultResharder()) for k in ("model", "optim")} if reshard else {}
    return CheckpointManager(CheckpointManager.Config(items=items, save=SyncCheckpointSaverConfig(),
                                                      storage_config=LocalFileSystemStorageConfig(use_direct_io=False)))


def tc_load(model, opt, d: Path, reshard: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Into the live state dicts' tensors (torch_checkpointing copies in place, reading through mmap), then
    load_state_dict, as a user resumes."""
    from torch.distributed.checkpoint.state_dict import _init_optim_state

    # A fresh AdamW has no moments to load into (into= needs templates): make them as DCP's get_state_dict does.
    _init_optim_state(opt)
    mgr = tc_manager(reshard)
    try:
        got = mgr.load(str(d), into={"model": model.state_dict(), "optim": opt.state_dict()})
    finally:
        mgr.close()
    model.load_state_dict(got["model"])
    opt.load_state_dict(got["optim"])
