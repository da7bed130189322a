"""Comparing nested training states in tests: `clone` (copies, so later training cannot change what was
recorded) and `diff` (the paths where two states differ: tensors bit for bit, dtype and shape included)."""
from __future__ import annotations

from typing import Any

import torch


def clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: clone(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(clone(v) for v in x)
    return x


def diff(got: Any, want: Any, path: str = "") -> list[str]:
    """Paths where two nested states differ (tensors bit for bit, dtype included)."""
    if isinstance(want, torch.Tensor):
        ok = isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
        return [] if ok else [path]
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path} keys {sorted(map(str, got))[:4] if isinstance(got, dict) else type(got)} vs {sorted(map(str, want))[:4]}"]
        return [p for k in want for p in diff(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return [f"{path} length"]
        return [p for i, (a, b) in enumerate(zip(got, want)) for p in diff(a, b, f"{path}[{i}]")]
    return [] if got == want else [path]
