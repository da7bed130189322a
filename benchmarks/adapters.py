"""The stall a training step sees from a checkpoint, through each framework: fito's adapter vs the framework's
own checkpointing, on the same model in the same run (one process, CPU).

    python3 benchmarks/adapters.py [--steps 6] [--every 2] [--width 2048] [--json out.json]

For each framework the same model trains twice in this process, once saving the framework's own way and once
through fito. Saves are blocking in both (each framework's default), so the stall a step sees is the time
spent in the framework's checkpoint call, measured around it (Lightning: Trainer.save_checkpoint, which
builds the checkpoint dict and calls the strategy; HF: Trainer._save_checkpoint; torchtitan: the manager's
save on a due step). The median step time without a save is given beside it. fito's saves are durable when they return (fsync of objects and directories, then the
decision); the frameworks' own (torch.save / DCP's FileSystemWriter) return without fsync, from page cache.
Frameworks that are not installed are reported as such."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch


def stalls(stamps: list[float], saved: set[int], saves: list[float]) -> dict[str, Any]:
    """stamps[i]: start of step i (a save at the end of step i lands in stamps[i+1] - stamps[i]); saves: the
    measured duration of each checkpoint call."""
    gaps = {i: stamps[i + 1] - stamps[i] for i in range(len(stamps) - 1)}
    plain = [g for i, g in gaps.items() if i not in saved and i > 0] or list(gaps.values())  # step 0 warms up
    return {"step_s": statistics.median(plain), "stall_s": statistics.median(saves), "stalls_s": saves}


def timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            into.append(time.perf_counter() - t)
    return wrapper


def mlp(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(4)])


# ---------------------------------------------------------------------------------------------------- Lightning
def lightning_run(fito_side: bool, root: str, a: argparse.Namespace) -> dict[str, Any]:
    import lightning.pytorch as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import SingleDeviceStrategy
    from fito.adapters.lightning import FitoCheckpoint, FitoSingleDeviceStrategy

    stamps: list[float] = []

    class Stamp(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            stamps.append(time.perf_counter())

        def on_train_end(self, *args: Any) -> None:
            stamps.append(time.perf_counter())

    class M(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(a.width)

        def training_step(self, batch: Any, i: int) -> Any:
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

    if fito_side:
        strategy: Any = FitoSingleDeviceStrategy(device="cpu")
        ckpt: Any = FitoCheckpoint(root, every_n_train_steps=a.every)
    else:
        strategy = SingleDeviceStrategy(device="cpu")
        ckpt = ModelCheckpoint(dirpath=root, every_n_train_steps=a.every, save_top_k=-1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(a.steps * 8, a.width)), batch_size=8)
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=strategy, max_steps=a.steps, callbacks=[Stamp(), ckpt],
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    saves: list[float] = []
    trainer.save_checkpoint = timed(trainer.save_checkpoint, saves)  # type: ignore[method-assign]
    trainer.fit(M(), data)
    return stalls(stamps, {s - 1 for s in range(a.every, a.steps + 1, a.every)}, saves)


# ---------------------------------------------------------------------------------------------------- HF Trainer
def hf_run(fito_side: bool, root: str, a: argparse.Namespace) -> dict[str, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
    from fito.adapters.hf import FitoTrainer

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, *args: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

        def on_train_end(self, *args: Any, **kw: Any) -> None:
            stamps.append(time.perf_counter())

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return a.steps * 4

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.arange(i, i + 32) % 8192
            return {"input_ids": ids, "labels": ids}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=8192, n_positions=64, n_embd=a.hf_width, n_layer=4, n_head=8))
    args = TrainingArguments(root, per_device_train_batch_size=4, max_steps=a.steps, save_strategy="steps",
                             save_steps=a.every, logging_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True)
    cls: Any = FitoTrainer if fito_side else Trainer
    trainer = cls(model=model, args=args, train_dataset=Data(), callbacks=[Stamp()])
    saves: list[float] = []
    trainer._save_checkpoint = timed(trainer._save_checkpoint, saves)
    trainer.train()
    params = sum(p.numel() for p in model.parameters())
    return {**stalls(stamps, {s - 1 for s in range(a.every, a.steps + 1, a.every)}, saves), "params": params}


# ---------------------------------------------------------------------------------------------------- torchtitan
def torchtitan_run(fito_side: bool, root: str, a: argparse.Namespace) -> dict[str, Any]:
    from torchtitan.components.checkpointer.dcp import CheckpointManager
    from torchtitan.components.optimizer.lr_scheduler import LRSchedulersContainer
    from torchtitan.components.optimizer.optimizer import OptimizersContainer, ParamGroupConfig
    from fito.adapters.torchtitan import FitoCheckpointManager

    model = mlp(a.width)
    opts = OptimizersContainer(OptimizersContainer.Config(
        param_groups=[ParamGroupConfig(pattern=".*", optimizer_name="AdamW", optimizer_kwargs={"lr": 1e-4})],
        implementation="for-loop"), model_parts=[model])
    scheds = LRSchedulersContainer(opts, lambda s: 1.0)
    kw = dict(dataloader=None, model_parts=[model], optimizers=opts, lr_schedulers=scheds, states={},
              sd_adapter=None, base_folder=root)
    if fito_side:
        mgr: Any = FitoCheckpointManager(FitoCheckpointManager.Config(enable=True, interval=a.every, keep_latest_k=0), **kw)
    else:
        mgr = CheckpointManager(CheckpointManager.Config(enable=True, interval=a.every, keep_latest_k=0,
                                                         last_save_model_only=False), **kw)
    stamps, saves = [], []
    x = torch.randn(8, a.width)
    for step in range(1, a.steps + 1):
        stamps.append(time.perf_counter())
        model(x).pow(2).mean().backward()
        opts.step()
        opts.zero_grad()
        scheds.step()
        t = time.perf_counter()
        if mgr.save(step, last_step=False):
            saves.append(time.perf_counter() - t)
    stamps.append(time.perf_counter())
    mgr.close()
    return stalls(stamps, {s - 1 for s in range(a.every, a.steps + 1, a.every)}, saves)


RUNS: dict[str, tuple[str, Callable[[bool, str, argparse.Namespace], dict[str, Any]], str]] = {
    "Lightning": ("lightning", lightning_run, "ModelCheckpoint (torch.save of the checkpoint dict)"),
    "HF Trainer": ("transformers", hf_run, "Trainer._save_checkpoint (safetensors + optimizer.pt + rng)"),
    "torchtitan": ("torchtitan", torchtitan_run, "CheckpointManager (dcp.save, FileSystemWriter)"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--width", type=int, default=2048, help="width of the 4-layer MLP (Lightning, torchtitan)")
    ap.add_argument("--hf-width", type=int, default=768, help="n_embd of the 4-layer GPT-2 (HF Trainer)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per side, alternating which side goes first")
    ap.add_argument("--only", choices=sorted(RUNS), action="append")
    ap.add_argument("--json")
    a = ap.parse_args()
    out: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                           "load_avg_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    for name, (module, run, native) in RUNS.items():
        if a.only and name not in a.only:
            continue
        try:
            __import__(module)
        except ImportError as exc:
            out[name] = {"skipped": f"{module} not installed ({exc})"}
            print(f"{name}: not installed", file=sys.stderr)
            continue
        row: dict[str, Any] = {"native how": native, "native": [], "fito": []}
        for r in range(a.repeats):
            for side in (("native", "fito") if r % 2 == 0 else ("fito", "native")):  # interleaved: noise hits both
                with tempfile.TemporaryDirectory(dir=os.environ.get("FITO_BENCH_DIR")) as tmp:
                    row[side].append(run(side == "fito", os.path.join(tmp, "ckpt"), a))
        for side in ("native", "fito"):
            runs = row[side]
            row[side] = {"step_s": statistics.median(x["step_s"] for x in runs),
                         "stall_s": statistics.median(v for x in runs for v in x["stalls_s"]),
                         "stalls_s": [v for x in runs for v in x["stalls_s"]]}
        out[name] = row
        print(f"{name}: step {row['native']['step_s']:.3f} s; stall native {row['native']['stall_s']:.3f} s, "
              f"fito {row['fito']['stall_s']:.3f} s", file=sys.stderr)
    out["load_avg_end"] = os.getloadavg()[0]
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
