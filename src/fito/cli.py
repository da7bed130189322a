"""The `fito` command line. Each sub-command lives in its own module under `fito.commands`
and exposes `register(subparsers)`; this module only discovers and dispatches them, and keeps the
contract of `fito.commands._contract` at the top: every error becomes one line on stderr and an exit
code from the one table, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from fito import commands
from fito.commands._contract import DISTRIBUTION, EXIT_CODES, UsageError, report_error, torch_version, version


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is raised (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    codes = "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    parser = _Parser(
        prog="fito",
        description=(
            "fito: PyTorch checkpoints that exist only when a durable decision says so, "
            "and the atomicity paper's theory as executable models."
        ),
        epilog=f"Run `fito COMMAND --help` for the options of one command. Exit codes of every command:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {version()} (torch {torch_version()})",
                        help="print the distribution name and version and the torch beside it, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [info.name for info in pkgutil.iter_modules(commands.__path__) if not info.name.startswith("_")]
    modules = [importlib.import_module(f"fito.commands.{name}") for name in names]
    # Checkpoint commands first (the product), then the theory models, each group alphabetical.
    for module in sorted(modules, key=lambda m: (getattr(m, "SECTION", 1), m.__name__)):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        return int(args.handler(args) or 0)
    except SystemExit as exc:  # --help and --version exit 0 by themselves
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return report_error(command, UsageError(str(exc.code)), as_json)
    except KeyboardInterrupt:
        print(f"fito {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line and an exit code
        return report_error(command, exc, as_json)


if __name__ == "__main__":
    sys.exit(main())
