"""The public surface of `import fito`: a literal list of names, each importable, every public error
class among them, typed (py.typed), and cheap: no optional back-end is loaded by the checkpoint API."""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import fito
import fito.errors

SRC = Path(fito.__file__).parent

# The pinned surface. Adding or removing a public name is an API change: update this list with it.
PUBLIC = [
    "Checkpointer", "CheckpointManager", "SaveHandle", "DataPosition", "RNGState", "load_tensors",
    "FitoError", "CheckpointCorruptError", "UnsafeCheckpointError", "CheckpointUnreadableError", "NoCommittedEpochError",
    "SaveAbortedError", "PeerLostError", "SaveInProgressError", "StaleFenceError", "StateMismatchError", "ValidationError",
    "RestoreFailedError", "GarbageCollectionError", "RetireRefusedError",
    "DecisionLogMissingError", "DecisionLogDamagedError", "DecisionLogLockedError", "DecisionLogReadOnlyError",
    "CoordinationUnavailableError", "EpochConflictError", "EpochFencedError", "EpochMismatchError",
    "__version__",
]


def test_all_is_a_literal_and_pinned() -> None:
    tree = ast.parse((SRC / "__init__.py").read_text())
    assigned = [n.value for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)]
    assert len(assigned) == 1
    assert ast.literal_eval(assigned[0]) == fito.__all__  # a readable list, not computed
    assert sorted(fito.__all__) == sorted(PUBLIC) and len(set(fito.__all__)) == len(fito.__all__)


def test_every_public_name_resolves_and_is_listed_by_dir() -> None:
    for name in fito.__all__:
        assert getattr(fito, name) is not None
    assert set(fito.__all__) <= set(dir(fito))
    assert "coord" in dir(fito) and fito.coord.SqliteDecisionStore.__name__ == "SqliteDecisionStore"


def test_every_public_error_class_is_importable_from_fito() -> None:
    errors = {name for name, obj in inspect.getmembers(fito.errors, inspect.isclass)
              if issubclass(obj, fito.errors.FitoError) and obj.__module__ == "fito.errors"}
    assert errors <= set(fito.__all__), f"errors missing from fito.__all__: {sorted(errors - set(fito.__all__))}"
    for name in errors:
        assert getattr(fito, name) is getattr(fito.errors, name)


def test_package_is_typed() -> None:
    assert (SRC / "py.typed").is_file()
    assert "py.typed" in (SRC.parent.parent / "pyproject.toml").read_text()


def test_checkpointer_loads_no_optional_backend() -> None:
    """`import fito; fito.Checkpointer` must not pull in etcd3gw/requests (~0.5 s; optional back-end), nor obstore
    (the S3 extra)."""
    code = ("import sys, fito; fito.Checkpointer; fito.CheckpointManager; import fito.coord; "
            "fito.coord.SqliteDecisionStore; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('etcd3gw', 'requests', 'urllib3', 'obstore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    # and the etcd names still work when asked for
    code = "import sys, fito; fito.coord.etcd.EtcdDecisionStore; fito.coord.EtcdFleetStore; print('etcd3gw' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"


def test_bare_import_does_not_load_torch() -> None:
    code = "import sys, fito, fito.cli; fito.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
