"""``ensemble models list|resolve``: what models are available offline and where they come from."""

from __future__ import annotations

import argparse
import time

from ensemble.eval.table import markdown_table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list available models or resolve one by name")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lp = msub.add_parser("list", help="every known model name: kind, available here, source, path")
    lp.set_defaults(func=run_list)
    rp = msub.add_parser("resolve", help="resolve a name to weights on disk (converts offline assets once)")
    rp.add_argument("name")
    rp.add_argument("--load", action="store_true", help="also load the model, and time it")
    rp.set_defaults(func=run_resolve)


def run_list(args: argparse.Namespace) -> int:
    from ensemble.models import list_models

    rows = [[m["name"], m["kind"], "yes" if m["available"] else "no", m["source"] or "–", m.get("path") or "–"]
            for m in list_models()]
    print(markdown_table(["name", "kind", "available", "source", "path"], rows))
    return 0


def run_resolve(args: argparse.Namespace) -> int:
    from ensemble.models import resolve

    t0 = time.perf_counter()
    r = resolve(args.name)
    print(f"{r.name}: kind={r.kind} source={r.source} path={r.path} ({time.perf_counter() - t0:.2f} s)")
    if args.load:
        from ensemble.models import load

        loader = {
            "causal_lm": load.load_causal_lm, "text_encoder": load.load_text_encoder,
            "image_classifier": load.load_image_classifier, "clip": load.load_clip,
            "sequence_classifier": load.load_sequence_classifier, "diffusion": load.load_diffusion,
        }[r.kind]
        t0 = time.perf_counter()
        loader(args.name)
        print(f"loaded in {time.perf_counter() - t0:.2f} s")
    return 0
