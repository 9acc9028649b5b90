"""Consensus decoding vs plain ``generate`` of the same LM: seconds per problem and tokens/s, in one run.

On the same ``--n`` GSM-Symbolic *training-split* problems (no evaluation problem is touched), with the
same prompt, the same LM and the same token budget, it times

* ``hf generate``: the library's own ``model.generate`` (greedy, or ``num_beams`` for beam > 1), no
  calculator, no scorers — the speed reference;
* ``lm (project loop)``: the project's token loop with the calculator and no scorers (the "LM alone"
  system of ``ensemble eval math``);
* ``consensus``: the LM guided token by token by the verifier ensemble (ZeroCap context shift,
  calculator, beam search);

alternating the systems problem by problem so background load hits all alike (after one untimed
warm-up ``generate`` per problem: on CPU the first pass over a new prompt length is slower), and prints a Markdown
table (seconds / problem, tokens / s, scored rounds / problem, slowdown vs ``hf generate``).

    ensemble bench math --n 4 --beams 1
"""

from __future__ import annotations

import argparse
import time

HELP = "consensus decoding vs plain generate: s/problem, tokens/s"
"""Help line of ``ensemble bench math``."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the benchmark (the model and token-rule flags of ``ensemble eval math`` included)."""
    from ensemble.tasks.math.cli import add_model_flags

    parser.add_argument("--n", type=int, default=4, help="training-split problems")
    parser.add_argument("--seed", type=int, default=0, help="training-split seed")
    parser.add_argument("--beams", type=int, nargs="+", default=[1], help="beam sizes")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed plain-generate pass per problem (the first pass over a new prompt "
                             "length is slower on CPU, which would penalise whichever system runs first)")
    parser.add_argument("--systems", default="hf,lm,ensemble",
                        help="comma-separated among hf, lm, a verifier name, ensemble")
    add_model_flags(parser)


def hf_generate(model, tokenizer, prompt: str, max_new_tokens: int, beam: int) -> tuple[str, int]:
    """Plain ``generate``: the text and the number of new tokens."""
    import torch

    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, num_beams=beam, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.eos_token_id,
                             stop_strings=["\nQuestion:", "\n\n\n"], tokenizer=tokenizer)
    new = out[0, enc["input_ids"].shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True), int(new.numel())


def run(args: argparse.Namespace) -> int:
    """Measure and print the Markdown table."""
    import torch

    from ensemble.eval.table import markdown_table
    from ensemble.tasks.math.cli import spec_from_args
    from ensemble.tasks.math.solver import MathEvaluator

    torch.set_num_threads(args.threads)
    spec = spec_from_args(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    spec.check_systems([s for s in systems if s != "hf"])
    ev = MathEvaluator(spec)
    items = ev.task.items(args.n, args.seed, split="train")
    gen = ev.generator
    stats: dict[tuple[str, int], dict[str, float]] = {}
    for item in items:
        if not args.no_warmup:
            hf_generate(gen.model, gen.tokenizer, gen.prompt_fn(item.context), ev.base_config.max_new_tokens, 1)
        for beam in args.beams:
            for system in systems:
                acc = stats.setdefault((system, beam), {"s": 0.0, "tok": 0, "rounds": 0, "correct": 0, "n": 0})
                if system == "hf":
                    t0 = time.perf_counter()
                    text, n_tok = hf_generate(gen.model, gen.tokenizer, gen.prompt_fn(item.context),
                                              ev.base_config.max_new_tokens, beam)
                    acc["s"] += time.perf_counter() - t0
                    acc["tok"] += n_tok
                    acc["correct"] += ev.task.metric(ev.task.answer(text, item), item)
                else:
                    row = ev.solve(item, f"{system}@{beam}", args.seed)
                    acc["s"] += row["timings"]["seconds"]
                    acc["tok"] += row["extras"]["tokens"]
                    acc["rounds"] += row["extras"].get("rounds", 0)
                    acc["correct"] += row["metric"]
                acc["n"] += 1
                print(f"{item.id} {system} beam {beam}: {acc['s']:.1f}s cumulative", flush=True)
    names = {"hf": "hf generate", "lm": "lm (project loop)"}
    rows = []
    for beam in args.beams:
        ref = stats.get(("hf", beam))
        ref_sp = ref["s"] / ref["n"] if ref else None
        for system in systems:
            a = stats[(system, beam)]
            sp = a["s"] / a["n"]
            rows.append([names.get(system, system), beam, int(a["n"]), sp, a["tok"] / max(a["s"], 1e-9),
                         a["rounds"] / a["n"], f"{int(a['correct'])}/{int(a['n'])}",
                         (sp / ref_sp) if ref_sp else None])
    header = ["decoder", "beam", "problems", "s / problem", "tokens / s", "scored rounds / problem",
              "correct", "x hf generate"]
    print(f"\nGSM-Symbolic training split, seed {args.seed}, LM {spec.lm}, threads {args.threads}\n")
    print(markdown_table(header, rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m ensemble.tasks.math.bench``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
