"""``ensemble list``: registered scorers, generators and tasks (imports nothing heavy)."""

from __future__ import annotations

import argparse

from ensemble.eval.table import markdown_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered scorers, generators and tasks")
    p.add_argument("kind", nargs="?", choices=("scorers", "generators", "tasks"), help="only this kind")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ensemble import GENERATORS, SCORERS, TASKS

    for kind, reg in (("scorers", SCORERS), ("generators", GENERATORS), ("tasks", TASKS)):
        if args.kind and args.kind != kind:
            continue
        print(f"## {kind}\n")
        rows = [[e.name, e.summary, e.entry_point] for e in reg.entries()]
        print(markdown_table(["name", "what", "entry point"], rows) if rows else "(none)")
        print()
    return 0
