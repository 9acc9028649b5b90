"""The ``ensemble`` command line. Each subcommand lives in ``actors/commands/<name>.py``.

A command module defines ``add_parser(subparsers)`` which registers its parser and sets
``func=run`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("run", "eval", "compare", "train", "bench", "serve", "models", "list", "demo")


def _setup_env() -> None:
    """Offline by default (no hub on these machines), quiet tokenizers, headless MuJoCo, loopback Ray."""
    if os.environ.get("ENSEMBLE_ONLINE") != "1":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="ensemble",
        description="Compose pre-trained models by iterative consensus: a generator proposes, an ensemble "
        "of scorers rates, a consensus loop refines. Runs in-process or on a Ray cluster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"actors.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"actors.commands.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ensemble`` console script."""
    _setup_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as err:
        if os.environ.get("ENSEMBLE_DEBUG"):
            raise
        cause = getattr(err, "cause", None)  # a Ray task error: its text is the remote traceback
        print(f"error: {cause if isinstance(cause, BaseException) else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
