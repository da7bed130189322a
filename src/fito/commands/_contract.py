"""The contract every `fito` command keeps: one exit-code table, one JSON envelope, one-line errors.

Commands compute a verdict and a JSON-able result and hand both to `finish`; `cli.main` turns every
exception into one line on stderr (and, under --json, an envelope with verdict "error") through
`report_error`. Nothing here knows about any one command, so a change to a command's logic never needs
to touch this file.

Exit codes (the table README.md documents):

    0  ok        the command ran; what it checks holds (checkpoint whole, property holds, run identical)
    1  finding   what it checks is violated (checkpoint not whole, property violated, state mixed,
                 a policy ran away, resumed run differs)
    2  usage     bad command line or bad input value
    3  not found no checkpoint at DIR, no committed epoch, no such epoch
    4  failed    the operation could not be carried out (I/O error, lock held, fenced out, unreadable
                 decision log, internal error)
    5  unknown   the check was cut short (e.g. --max-states) before it could decide
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from fito.errors import FitoError, NoCommittedEpochError

DISTRIBUTION = "fito-ckpt"  # the name on PyPI (`fito` there is an unrelated project); the import name is fito

OK, FINDING, USAGE, NOT_FOUND, FAILED, UNKNOWN = 0, 1, 2, 3, 4, 5

# verdict -> exit code. "ok": nothing was claimed (a listing, a table); "holds" / "violated" / "unknown":
# a claim was checked (three-valued, as knossos and stateright report); "error": the command failed.
VERDICTS = {"ok": OK, "holds": OK, "violated": FINDING, "unknown": UNKNOWN}

EXIT_CODES = {
    OK: "ok: the command ran; what it checks holds",
    FINDING: "finding: what it checks is violated (not whole, property violated, mixed state, runaway, differs)",
    USAGE: "usage: bad command line or bad input value",
    NOT_FOUND: "not found: no checkpoint at DIR, no committed epoch, or no such epoch",
    FAILED: "failed: I/O error, lock held, fenced out, unreadable decision log, or an internal error",
    UNKNOWN: "unknown: the check was cut short before it could decide",
}


# The root argument of the checkpoint commands (inspect, verify, gc, recover-log, export).
ROOT_HELP = ("checkpoint directory, or s3://bucket/prefix (S3 and S3-compatible stores; credentials and endpoint "
             "from the standard AWS environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
             "AWS_REGION, AWS_ALLOW_HTTP=true for a plain-http endpoint)")


class UsageError(Exception):
    """Bad input that argparse could not catch (a value out of range, a malformed list): exit 2."""


def version() -> str:
    from fito import __version__

    return __version__


def torch_version() -> str:
    """The torch fito runs beside (pyproject.toml accepts any >= 2.11), as `torch.__version__` says it, build
    tag included (2.14.1+cu130; the distribution's metadata says only 2.14.1), read from torch/version.py
    without `import torch`, so `fito --version` stays fast."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "not installed"
    for folder in spec.submodule_search_locations:
        try:
            text = (Path(folder) / "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if found:
            return found.group(1)
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "not installed"


def envelope(command: str, verdict: str, result: Any, code: int | None = None) -> dict[str, Any]:
    """The one JSON shape every command prints under --json."""
    return {"command": command, "version": version(), "verdict": verdict,
            "exit_code": VERDICTS[verdict] if code is None else code, "result": _strict(result)}


def finish(args: argparse.Namespace, verdict: str, result: Any) -> int:
    """Print the envelope when --json was given; return the verdict's exit code either way."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; one of {sorted(VERDICTS)}")
    if getattr(args, "json", False):
        print(json.dumps(envelope(args.command, verdict, result), indent=2, default=_plain))
    return VERDICTS[verdict]


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, UsageError):
        return USAGE
    if isinstance(exc, (NoCommittedEpochError, FileNotFoundError, NotADirectoryError)):
        return NOT_FOUND
    return FAILED  # FitoError, OSError, and anything unexpected


def report_error(command: str, exc: BaseException, as_json: bool) -> int:
    """One line on stderr (never a traceback unless FITO_DEBUG=1); under --json also the envelope."""
    code = exit_code_of(exc)
    if isinstance(exc, (UsageError, FitoError, OSError)):
        message = str(exc) or type(exc).__name__
    else:  # a bug: say so, in one line, and how to see more
        message = f"internal error {type(exc).__name__}: {exc} (set FITO_DEBUG=1 for the traceback)"
    message = " ".join(message.split())  # one line, whatever the exception text holds
    prefix = f"fito {command}" if command else "fito"
    if os.environ.get("FITO_DEBUG"):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{prefix}: error: {message}", file=sys.stderr)
    if as_json:
        doc = envelope(command or "fito", "ok", {"error": message, "type": type(exc).__name__}, code)
        doc["verdict"] = "error"
        print(json.dumps(doc, indent=2))
    return code


def _plain(x: Any) -> Any:
    """numpy scalars and arrays (the models' summaries hold some) as plain JSON values."""
    if hasattr(x, "tolist"):
        return _strict(x.tolist())
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def _strict(x: Any) -> Any:
    """Strict JSON: infinities and NaN (log 0, empty medians) become strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): _strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict(v) for v in x]
    return x
