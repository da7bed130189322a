"""The `fito` command line. Each sub-command lives in its own module under `fito.commands`
and exposes `register(subparsers)`; this module only discovers and dispatches them."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from fito import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fito",
        description=(
            "fito: PyTorch checkpoints that exist only when a durable decision says so, "
            "and the atomicity paper's theory as executable models."
        ),
        epilog="Run `fito COMMAND --help` for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [importlib.import_module(f"fito.commands.{info.name}") for info in pkgutil.iter_modules(commands.__path__)]
    # Checkpoint commands first (the product), then the theory models, each group alphabetical.
    for module in sorted(modules, key=lambda m: (getattr(m, "SECTION", 1), m.__name__)):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code = args.handler(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
