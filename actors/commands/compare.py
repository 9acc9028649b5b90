"""``ensemble compare``: one system in two results files side by side (e.g. the untuned vs the tuned LM).

Both files are what ``ensemble eval`` wrote; the rows of ``--system`` are paired by (item id, seed), so
the difference carries a paired-bootstrap interval over the items both files hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="one system in two results files, side by side, with a paired bootstrap")
    p.add_argument("files", nargs=2, metavar="RESULTS.jsonl", help="the reference file, then the other one")
    p.add_argument("--system", default="lm@1", help="the system compared (default lm@1)")
    p.add_argument("--labels", default=None, metavar="A,B", help="row names (default: the file stems)")
    p.add_argument("--out", default=None, help="also write the Markdown here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ensemble.eval.table import compare_table
    from ensemble.results import ResultsFile

    labels = args.labels.split(",") if args.labels else [Path(f).stem for f in args.files]
    if len(labels) != 2 or len(set(labels)) != 2:
        raise ValueError(f"--labels {args.labels!r} must name the two files differently, e.g. untuned,tuned")
    for f in args.files:
        if not Path(f).is_file():
            raise FileNotFoundError(f"no results file {f}: run `ensemble eval … --out {f}` first")
    rows = [ResultsFile(f).rows() for f in args.files]
    table = compare_table(rows[0], rows[1], args.system, labels)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0
