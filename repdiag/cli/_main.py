"""Argument parsing and dispatch. Each command lives in its own module and is imported only
when it runs, so ``repdiag --help`` stays fast (no torch, POT, UMAP or matplotlib)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._errors import RepdiagError
from .._version import __version__

# command name -> (module under repdiag.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "metrics": ("_cmd_metrics", "list the available metric plugins"),
    "report": ("_cmd_report", "compare checkpoints side by side: tables, plots and an HTML report"),
    "demo": ("_cmd_demo", "train a small CNN with and without BatchNorm on digits and write the report"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full parser: one sub-parser per command, each filled by its module's ``add_arguments``."""
    parser = argparse.ArgumentParser(
        prog="repdiag",
        description="What normalization (BatchNorm above all) does to a network's hidden representations.",
    )
    parser.add_argument("--version", action="version", version=f"repdiag {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
        _command_module(modname).add_arguments(p)
    return parser


def _command_module(modname: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"repdiag.cli.{modname}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``repdiag`` command line; return the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for the report's provenance
    if args.command is None:
        parser.print_help()
        return 2
    module = _command_module(COMMANDS[args.command][0])
    try:
        if getattr(args, "seed", None) is not None:
            from .._validation import check_seed

            check_seed(args.seed, "--seed")  # a seed past 2**64 would overflow deep in torch
        return int(module.run(args) or 0)
    except (RepdiagError, OSError) as exc:  # OSError: a file the command reads or writes, in one line
        if getattr(args, "debug", False):
            raise
        msg = str(exc) if isinstance(exc, RepdiagError) else " ".join(
            f"{exc.strerror or exc}{f': {exc.filename!r}' if exc.filename else ''} ({type(exc).__name__}). "
            "Check the path.".split())
        print(f"repdiag {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("repdiag: interrupted", file=sys.stderr)
        return 130
