"""fito's layers (docs/architecture.md): every import of every module under src/fito, the ones inside functions
included, follows the table below, and no two packages import each other, directly or around a loop.

Read with `ast` only (nothing is imported), so an import hidden in a function to dodge a cycle at import time
counts like any other."""
from __future__ import annotations

import ast
from pathlib import Path

import fito

SRC = Path(fito.__file__).parent

# Modules every package may use: no fito imports of their own (the root package's __init__ imports lazily).
BASE = {"fito", "errors", "knobs", "torch_compat"}
SEAM = {"protocol", "format", "storage", "coord"}
LIBRARY = SEAM | {"plan", "commit", "dcp", "ckpt", "export"}

# package -> the packages it may import (besides BASE and itself). Bottom first.
ALLOWED: dict[str, set[str]] = {
    "fito": set(), "errors": set(), "knobs": set(), "torch_compat": set(),
    "protocol": set(),  # pure: the machines, names, coverage, the GC plan
    "format": {"protocol"},  # bytes only: never a storage, never torch
    # storage and coord are one layer (the seam): either may use the other, never both (the cycle check)
    "storage": {"protocol", "format", "coord"},
    "coord": {"protocol", "format", "storage"},
    "plan": {"protocol", "format"},  # torch-aware and pure: no storage, no decisions
    "commit": SEAM | {"plan"},  # THE executor
    "dcp": SEAM | {"plan", "commit"},  # fito.dcp.Writer/Reader: adapters from DCP onto commit/
    "ckpt": SEAM | {"plan", "commit", "dcp"},  # the Checkpointer runs DCP with fito.dcp's Writer and Reader
    "export": SEAM | {"plan", "commit", "dcp", "ckpt"},
    "model": SEAM,  # the checker drives the same machines through a simulated executor; never ckpt/commit I/O
    "testing": LIBRARY | {"model"},  # beside the library: fixtures, launchers, fault injection
    "demo": LIBRARY | {"testing"},
    "adapters": LIBRARY,
    "commands": LIBRARY | {"model", "demo", "testing"},
    "cli": {"commands"},
    "__main__": {"cli"},
}

# Arrows other helpers are removing in this round (issue 16): each names its module and the package it still
# imports. Delete the line when the arrow is gone; the test then holds it.
PENDING: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fito"


def imported(path: Path, module: str) -> list[str]:
    """Every fito module `path` imports, wherever the import statement stands."""
    is_pkg = path.name == "__init__.py"
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "fito":  # `from fito import knobs` names a module; `from fito import __version__` the root
                out += [f"fito.{a.name}" if (SRC / a.name).is_dir() or (SRC / f"{a.name}.py").is_file() else "fito"
                        for a in node.names]
            else:
                out.append(target)
    return [m for m in out if m == "fito" or m.startswith("fito.")]


def arrows() -> dict[tuple[str, str], list[str]]:
    """(from package, to package) -> the module imports that make it."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        for target in imported(path, module):
            a, b = package_of(module), package_of(target)
            if a != b:
                found.setdefault((a, b), []).append(f"{module} -> {target}")
    return found


def test_every_package_is_in_the_table() -> None:
    packages = {package_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert packages <= set(ALLOWED), f"packages with no row in ALLOWED: {sorted(packages - set(ALLOWED))}"


def test_every_import_follows_the_table() -> None:
    wrong = []
    for (a, b), where in sorted(arrows().items()):
        if b in BASE or b in ALLOWED[a]:
            continue
        left = [w for w in where if (w.split(" -> ")[0], b) not in PENDING]
        if left:
            wrong.append(f"{a} may not import {b}: {left}")
    assert not wrong, "imports against the layers (docs/architecture.md):\n" + "\n".join(wrong)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for (a, b), where in arrows().items():
        if any((w.split(" -> ")[0], b) not in PENDING for w in where):
            graph.setdefault(a, set()).add(b)
    cycles = []
    for start in sorted(graph):  # a path back to `start` is a cycle through it
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    assert not cycles, f"package cycles: {cycles}"


def test_the_low_layers_import_nothing_above_them() -> None:
    """The issue's own words: plan/ and format/ depend on nothing above them; commit/ is below ckpt/ and dcp/."""
    found = arrows()
    for low, high in (("plan", "ckpt"), ("plan", "dcp"), ("plan", "commit"), ("plan", "storage"),
                      ("format", "ckpt"), ("format", "dcp"), ("format", "commit"), ("format", "storage"),
                      ("commit", "ckpt"), ("commit", "dcp"), ("dcp", "ckpt")):
        assert (low, high) not in found, f"{low} imports {high}: {found[(low, high)]}"
