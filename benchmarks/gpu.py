"""fito on a CUDA machine, in one prepared script: install fito from wheels carried along (no network), save
and restore a CUDA model + AdamW (sync and async), check every restored byte, and compare with DCP.

    benchmarks/gpu_prepare.sh                      # here, with network: wheels into benchmarks/gpu_wheels/
    python3 benchmarks/gpu.py --wheels benchmarks/gpu_wheels [--gb 2] [--json out.json]   # there
    python3 benchmarks/gpu.py --device cpu --gb 0.05 --wheels benchmarks/gpu_wheels        # dry run, no GPU

With --wheels, the script first installs fito, and whatever of its dependencies this Python lacks, from that
folder alone (--no-index) into a temporary folder put first on PYTHONPATH, checks fito's requirements, and
runs itself again with it; torch itself is never installed or replaced. Then, on one process (no process group):
- fito save (sync), fito restore into a spoiled model and optimizer, bit-exact check;
- fito async save twice (cold: the staging buffer is new; warm: reused), training mutating the model right
  after each returns; restore of each, bit-exact against the values at the call;
- DCP save / load with FileSystemWriter/Reader, and DCP async_save with a reused `DefaultStager` (pinned
  memory, async staging, non-blocking copies), cold and warm.
"Stall" is how long training is held: until the call returns (fito) or until DCP's staging completes (the
earliest point at which the next optimizer step may touch the parameters). Times include a CUDA sync.
Sized to end well under 10 minutes on one H100 with the default --gb 2 (2 GiB of fp32 parameters: 6 GiB of
state with AdamW's two moments). Prints one table; exit 1 if any restore is not bit-exact."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

INNER = "FITO_GPU_BENCH_INSIDE_VENV"


def install_and_reexec(wheels: Path, argv: list[str]) -> int:
    """fito, and each wheel in `wheels` whose distribution this Python lacks, installed from that folder alone
    into a temporary site folder put first on PYTHONPATH; then this script again. Not a venv: the GPU images
    run Python from a venv of their own (/opt/torch/.venv), whose packages a venv made from it would not see,
    and their Python may lack ensurepip. Nothing the machine has is replaced: torch and its neighbours stay."""
    from importlib import metadata

    fito_wheels = sorted(wheels.glob("fito_ckpt-*.whl"))
    if not fito_wheels:
        raise SystemExit(f"gpu.py: no fito_ckpt-*.whl in {wheels}; run benchmarks/gpu_prepare.sh where pip has network")
    lacking = [fito_wheels[-1]]
    for wheel in sorted(wheels.glob("*.whl")):
        if wheel.name.startswith("fito_ckpt-"):
            continue
        try:
            metadata.version(wheel.name.split("-")[0])
        except metadata.PackageNotFoundError:
            lacking.append(wheel)
    site_dir = Path(tempfile.mkdtemp(prefix="fito-gpu-site-"))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir",
                    "--disable-pip-version-check", "--target", str(site_dir), *map(str, lacking)], check=True)
    print(f"installed {', '.join(w.name.split('-')[0] for w in lacking)} from {wheels} into {site_dir} in "
          f"{time.perf_counter() - t0:.1f} s (no network; torch untouched)", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
    env[INNER] = str(site_dir)
    try:
        return subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env, cwd=tempfile.gettempdir()).returncode
    finally:
        shutil.rmtree(site_dir, ignore_errors=True)


def unmet_requirements() -> list[str]:
    """fito's declared requirements that this Python does not meet (a carried fito beside old packages)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    unmet = []
    for text in metadata.requires("fito-ckpt") or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement (test tools)
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{req} (not installed)")
            continue
        if not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req} (have {have})")
    return unmet


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wheels", type=Path, help="install fito from this folder first (benchmarks/gpu_prepare.sh)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    p.add_argument("--gb", type=float, default=2.0, help="GiB of fp32 parameters (state is 3x with AdamW)")
    p.add_argument("--dir", type=Path, default=None, help="where checkpoints go (default: a temp folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.wheels is not None and not os.environ.get(INNER):
        argv = list(sys.argv[1:])
        i = argv.index("--wheels") if "--wheels" in argv else None
        argv = argv[:i] + argv[i + 2:] if i is not None else [a for a in argv if not a.startswith("--wheels=")]
        if args.json is not None:  # the child runs elsewhere: give it absolute paths
            argv += ["--json", str(args.json.resolve())]
        if args.dir is not None:
            argv += ["--dir", str(args.dir.resolve())]
        return install_and_reexec(args.wheels.resolve(), argv)
    return bench(args)


def bench(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
    from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

    import fito

    inside = os.environ.get(INNER)
    if inside and not fito.__file__.startswith(inside):
        raise SystemExit(f"gpu.py: fito imported from {fito.__file__}, not from the carried wheel in {inside}")
    if inside and unmet_requirements():
        raise SystemExit(f"gpu.py: fito's requirements not met here: {'; '.join(unmet_requirements())}; carry those "
                         "wheels too (benchmarks/gpu_prepare.sh)")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu.py: no CUDA device; pass --device cpu for a dry run")
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    width = 4096 if args.gb >= 0.5 else 512
    layers = max(1, round(args.gb * (1 << 30) / (width * width * 4)))
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> None:  # what "training goes on" means here: every parameter and moment changes
        for q in model.parameters():
            q.grad = torch.randn_like(q)
        opt.step()

    train_step()
    state = {"model": model, "optim": opt}

    def tensors() -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in model.state_dict().items()}
        for pid, s in opt.state_dict()["state"].items():
            out.update({f"optim.{pid}.{k}": v for k, v in s.items() if isinstance(v, torch.Tensor)})
        return out

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in tensors().items()}

    failures: list[str] = []

    def check(what: str, ref: dict[str, torch.Tensor]) -> None:
        now = tensors()
        bad = [k for k in ref if k not in now or now[k].device != ref[k].device or now[k].dtype != ref[k].dtype
               or not torch.equal(now[k], ref[k])]
        if set(now) != set(ref) or bad:
            failures.append(f"{what}: {len(bad)} tensor(s) differ, e.g. {bad[:3]}")

    def spoil() -> None:
        with torch.no_grad():
            for v in tensors().values():
                if v.is_floating_point():
                    v.add_(1.0)
        sync()

    def timed(fn: Callable[[], Any]) -> float:
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    state_bytes = sum(v.numel() * v.element_size() for v in tensors().values())
    root = Path(args.dir or tempfile.mkdtemp(prefix="fito-gpu-"))
    root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, float] = {}
    t_all = time.perf_counter()

    # fito, sync
    ref = snapshot()
    ck = fito.Checkpointer(root / "fito", progress=False)
    rows["fito save (sync)"] = timed(lambda: ck.save(1, state))
    spoil()
    rows["fito restore"] = timed(lambda: ck.restore(state, step=1))
    check("fito restore of the sync save", ref)

    # fito, async: training mutates the state right after the call returns
    for step, label in ((2, "cold"), (3, "warm")):
        train_step()
        ref = snapshot()
        sync()
        t0 = time.perf_counter()
        handle = ck.save(step, state, blocking=False)
        sync()
        rows[f"fito async stall ({label})"] = time.perf_counter() - t0
        train_step()  # overlaps the background write
        handle.wait()
        rows[f"fito async total ({label})"] = time.perf_counter() - t0
        ck.restore(state, step=step)
        check(f"fito restore of the async save ({label})", ref)
    ck.close()
    shutil.rmtree(root / "fito")

    # DCP, sync save and load (FileSystemWriter/Reader), then the loaded dict put into the model and optimizer
    def dcp_sd() -> dict[str, Any]:
        return {"model": model.state_dict(), "optim": opt.state_dict()}

    train_step()
    ref = snapshot()
    rows["DCP save (sync)"] = timed(lambda: dcp.save(dcp_sd(), storage_writer=FileSystemWriter(root / "dcp"), no_dist=True))
    spoil()

    def dcp_load() -> None:
        sd = dcp_sd()
        dcp.load(sd, storage_reader=FileSystemReader(root / "dcp"), no_dist=True)
        model.load_state_dict(sd["model"])
        opt.load_state_dict(sd["optim"])

    rows["DCP load"] = timed(dcp_load)
    check("DCP load", ref)
    shutil.rmtree(root / "dcp")

    # DCP async_save with a reused DefaultStager: pinned memory, async staging, non-blocking copies
    pinned = dev.type == "cuda"  # pinning needs CUDA; the CPU dry run stages into ordinary memory
    stager = DefaultStager(StagingOptions(use_pinned_memory=pinned, use_shared_memory=False,
                                          use_async_staging=True, use_non_blocking_copy=pinned))
    for label in ("cold", "warm"):
        train_step()
        sync()
        t0 = time.perf_counter()
        resp = dcp.async_save(dcp_sd(), storage_writer=FileSystemWriter(root / f"dcp-{label}"), async_stager=stager,
                              no_dist=True)
        staging = getattr(resp, "staging_completion", None)
        if staging is not None:
            staging.result()
        sync()
        rows[f"DCP async stall ({label})"] = time.perf_counter() - t0
        upload = getattr(resp, "upload_completion", resp)
        train_step()
        upload.result()
        rows[f"DCP async total ({label})"] = time.perf_counter() - t0
        shutil.rmtree(root / f"dcp-{label}")
    stager.close()
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    head = (f"device {name}; torch {torch.__version__}; fito {fito.__version__}; state {state_bytes / 2**30:.2f} GiB "
            f"({layers} x Linear({width},{width}) fp32 + AdamW); total {time.perf_counter() - t_all:.1f} s")
    print(head)
    print(f"| {'what':28} | {'seconds':>8} | {'GiB/s':>6} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 8}|")
    for what, s in rows.items():
        print(f"| {what:28} | {s:8.3f} | {state_bytes / 2**30 / s:6.2f} |")
    print("bit-exact: " + ("every restore" if not failures else "NO: " + "; ".join(failures)))
    if args.json is not None:
        args.json.write_text(json.dumps({"header": head, "seconds": rows, "state_bytes": state_bytes,
                                         "failures": failures, "device": name, "torch": torch.__version__}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
