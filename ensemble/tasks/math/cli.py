"""Command-line layer of the math task: flags of ``run``, ``eval``, ``serve`` and ``bench`` (they map onto
``EvalSpec``), and ``ensemble run math``.

Every task folder's ``cli.py`` offers the same four names to the generic commands:
``add_arguments(parser)``, ``solver_spec(args)``, ``add_run_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ensemble.tasks.math.task import DEFAULT_LM, DEFAULT_SHOTS

TOKEN_FLAGS = {
    "top_k": int, "min_p": float, "steps_per_token": int, "step_size": float, "temperature": float,
    "fluency_weight": float, "fusion": float, "rerank_weight": float, "max_new_tokens": int,
    "length_penalty": float, "select_weight": float,
}
"""TokenConfig fields exposed as ``--top-k`` … flags."""

DEFAULTS: dict[str, Any] = {"top_k": 8, "min_p": 1.0, "steps_per_token": 1, "step_size": 0.1, "rerank_weight": 0.3, "max_new_tokens": 256,
                           "score_results": True, "select_final": True}
"""Defaults chosen for SmolLM2-135M on 2 CPU cores (tuned on training-seed problems only)."""


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """``--lm``, ``--verifier-checkpoint``, token-rule knobs, ``--threads``, ``--device``."""
    p.add_argument("--lm", default=DEFAULT_LM,
                   help="causal LM name (project checkpoint, registry, hub id or local dir); the default is the "
                        "untuned SmolLM2-135M-Instruct (`--lm generators/smollm2-gsm-lora`: the LoRA copy "
                        "`ensemble train generator` tunes; `--lm generators/smollm2-gsm --shots 0`: the full fine-tune)")
    p.add_argument("--verifiers", default="numeric_verifier,minilm_verifier",
                   help="comma-separated verifier scorer names forming the ensemble")
    p.add_argument("--weights", default="", metavar="NAME=W,…",
                   help="per-verifier weights of the ensemble, e.g. numeric_verifier=1,minilm_verifier=0.3 "
                        "(a missing name weighs 1, the paper's unweighted sum), or 'auc': 2·AUC − 1 from each "
                        "checkpoint's held-out AUC on LM samples (training-split problems)")
    p.add_argument("--token-scorers", default="", metavar="NAME,…",
                   help="TokenConfig.token_scorers: the verifiers asked in token rounds (default: all); the others "
                        "rate only finished solutions in the final selection (beam > 1)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                   help="verifier checkpoint override, e.g. numeric_verifier=/tmp/ck (repeatable)")
    p.add_argument("--scorer-option", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="a scorer constructor argument (VALUE read as JSON, else text), e.g. "
                        "numeric_verifier.abstain=true, lm_scorer.model=smollm2-135m-instruct (repeatable)")
    p.add_argument("--scales", default="", metavar="NAME=S,…|calibration|DIR",
                   help="per-verifier calibration scales (multiply each verifier's normalised ratings): NAME=S "
                        "pairs, or 'calibration' / a directory: those fitted by `ensemble train calibration`")
    p.add_argument("--annotations", action="store_true", help="GSM8K <<expr=value>> format in the prompt")
    p.add_argument("--shots", type=int, default=DEFAULT_SHOTS, choices=[0, 1],
                   help="worked examples in the prompt (1 for an instruct LM, the default; 0 for the fine-tuned generator)")
    p.add_argument("--normalisation", default="none", choices=["zscore", "none", "rank"],
                   help="per-verifier normalisation of ratings before they are summed (none: raw log p(correct), "
                        "so a verifier whose features do not apply to a position barely pulls)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--score-results", action=argparse.BooleanOptionalAction, default=DEFAULTS["score_results"],
                   help="TokenConfig.score_results: the verifiers choose every digit of a result after '='")
    p.add_argument("--select-final", action=argparse.BooleanOptionalAction, default=DEFAULTS["select_final"],
                   help="TokenConfig.select_final: with several beams the verifiers pick among the finished solutions")
    for name, typ in TOKEN_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=typ, default=DEFAULTS.get(name), help=f"TokenConfig.{name}")
    add_pick_flags(p)


def add_pick_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the solution-level systems ``pick_<base>@K`` (:class:`~ensemble.tasks.math.pick_system.PickSpec`)."""
    p.add_argument("--pick-temperature", type=float, default=0.7,
                   help="pick_…@K systems: sampling temperature of the K − 1 sampled solutions (row 0 is greedy)")
    p.add_argument("--pick-combine", default="vote", choices=["vote", "best"],
                   help="pick_…@K systems: rating-weighted vote over answers, or the best-rated solution")
    p.add_argument("--pick-scales", default="", metavar="calibration|DIR",
                   help="pick_…@K systems: calibration scales fitted by `ensemble train pick-calibration` "
                        "('calibration' or its directory; default: every scale 1)")


def spec_from_args(args: argparse.Namespace) -> Any:
    """An :class:`ensemble.tasks.math.solver.EvalSpec` from parsed flags."""
    from ensemble.tasks.math.solver import EvalSpec

    names = [v.strip() for v in args.verifiers.split(",") if v.strip()]
    overrides = {}
    for item in args.checkpoint:
        if "=" not in item:
            raise ValueError(f"--checkpoint {item!r} must look like NAME=PATH")
        name, path = item.split("=", 1)
        if name not in names:
            raise ValueError(f"--checkpoint names {name!r}, which is not among --verifiers {names}")
        overrides[name] = {"checkpoint": path}
    for name, key, value in _scorer_options(getattr(args, "scorer_option", []), names):
        overrides.setdefault(name, {})[key] = value
    weights_text = getattr(args, "weights", "")
    if weights_text.strip() == "auc":
        from ensemble.tasks.math.verifiers.checkpoint import auc_weights

        weights = auc_weights({n: overrides.get(n, {}) for n in names})
    else:
        weights = _weights(weights_text)
    token = {k: getattr(args, k) for k in (*TOKEN_FLAGS, "score_results", "select_final") if getattr(args, k, None) is not None}
    token_scorers = [n.strip() for n in getattr(args, "token_scorers", "").split(",") if n.strip()]
    if token_scorers:
        token["token_scorers"] = token_scorers
    return EvalSpec(lm=args.lm, verifiers={n: overrides.get(n, {}) for n in names}, token=token,
                    task={"annotations": args.annotations, "shots": args.shots}, device=args.device, threads=args.threads, weights=weights,
                    normalisation=getattr(args, "normalisation", "none"),
                    scales=_scales(getattr(args, "scales", ""), names), pick=_pick(args, names))


def _pick(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The :class:`~ensemble.tasks.math.pick_system.PickSpec` fields of ``--pick-…`` flags (scales kept to the
    verifiers in use)."""
    pick: dict[str, Any] = {"temperature": getattr(args, "pick_temperature", 0.7),
                            "combine": getattr(args, "pick_combine", "vote")}
    text = getattr(args, "pick_scales", "").strip()
    if text:
        from ensemble.tasks.math.pick_calibrate import DEFAULT_NAME, load_pick_scales

        scales = load_pick_scales(DEFAULT_NAME if text == "calibration" else text)
        pick["scales"] = {m: {n: c for n, c in s.items() if n in names} for m, s in scales.items()
                          if m == "ensemble" or m in names}
        if "ensemble" in scales and set(scales["ensemble"]) != set(names):
            raise ValueError(f"--pick-scales {text!r} fitted the ensemble of {sorted(scales['ensemble'])}, not of "
                             f"--verifiers {names}; refit with `ensemble train pick-calibration --verifiers …`")
    return pick


def _scorer_options(items: list[str], names: list[str]) -> list[tuple[str, str, Any]]:
    """``["numeric_verifier.abstain=true"]`` → ``[("numeric_verifier", "abstain", True)]``."""
    import json

    out = []
    for item in items:
        target, sep, raw = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"--scorer-option {item!r} must look like NAME.KEY=VALUE, e.g. numeric_verifier.abstain=true")
        if name not in names:
            raise ValueError(f"--scorer-option names {name!r}, which is not among --verifiers {names}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.append((name, key, value))
    return out


def _scales(text: str, names: list[str]) -> dict[str, float]:
    """``--scales``: inline ``NAME=S`` pairs, or a saved calibration (``calibration`` or a directory), kept to
    the verifiers in use."""
    text = text.strip()
    if not text:
        return {}
    if "=" in text:
        return _weights(text)
    from ensemble.tasks.math.calibrate import DEFAULT_NAME, load_scales

    scales = load_scales(DEFAULT_NAME if text == "calibration" else text)
    return {n: c for n, c in scales.items() if n in names}


def _weights(text: str) -> dict[str, float]:
    """``"a=1,b=0.3"`` → ``{"a": 1.0, "b": 0.3}``, with a clear error for anything else."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights {text!r}: each entry must look like NAME=W, e.g. minilm_verifier=0.3") from None
    return out


# -- the task-CLI contract -----------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble eval math`` / ``serve math`` beyond the generic ones."""
    p.add_argument("--source", default="gsm_symbolic",
                   help="gsm_symbolic (template-disjoint train/test splits), reasoning_gym:<dataset>[?key=value&...] "
                        "(evaluation only, e.g. reasoning_gym:leg_counting), or a GSM8K .jsonl path")
    p.add_argument("--beams", type=int, nargs="+", default=[1, 5],
                   help="beam sizes of the default systems (a system is <base>@<beam>, e.g. ensemble@5)")
    add_model_flags(p)


def solver_spec(args: argparse.Namespace) -> Any:
    """The :class:`~ensemble.contracts.SolverSpec` of parsed flags."""
    import dataclasses

    from ensemble.contracts import SolverSpec

    spec = spec_from_args(args)
    spec.beams = tuple(getattr(args, "beams", spec.beams))
    spec.__post_init__()
    settings = dataclasses.asdict(spec)
    source = getattr(args, "source", "gsm_symbolic")
    settings["task"]["source"] = source
    return SolverSpec("math", {"source": source, **settings["task"]}, settings)


RUN_HELP = "solve one word problem with the LM guided by the verifier ensemble"
"""Help line of ``ensemble run math``."""


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``ensemble run math``."""
    p.add_argument("question", help="the word problem")
    p.add_argument("--system", default="ensemble", help="lm, a verifier name, or ensemble (default)")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--all-rounds", action="store_true", help="show every round, not only those where a scorer moved the token")
    add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    """Solve one problem; show the rounds where a verifier moved the token, then the solution."""
    from ensemble.contracts import Item
    from ensemble.eval.beams import LM_ALONE
    from ensemble.eval.guided_lm import ROUND_HEADER, round_rows
    from ensemble.eval.table import markdown_table
    from ensemble.tasks.math.solver import MathEvaluator

    spec = spec_from_args(args)
    system = f"{args.system}@{args.beam}"
    spec.check_systems([system])
    evaluator = MathEvaluator(spec)
    records: list[Any] = []
    row = evaluator.solve(Item("cli", {"question": args.question}), system, args.seed,
                          callback=lambda rec, state: records.append(rec))
    extras = row["extras"]
    if args.system != LM_ALONE:
        shown = round_rows(records, args.all_rounds)
        print(f"## rounds ({len(records)} in total; {'all' if args.all_rounds else 'those where a scorer moved the token'})\n")
        print(markdown_table(ROUND_HEADER, shown))
        print(f"\nmoved tokens per scorer: { {n: s['moved'] for n, s in row['scorers'].items()} }")
        final = next((r for r in records if r.info.get("final")), None)
        if final is not None:
            info = final.info
            print(f"final selection among {final.n_candidates} finished beams: the verifiers chose #{info['chosen']} "
                  f"(the LM's own best: #{info['lm_choice']}; each scorer's favourite: {info['scorer_top']})")
    print(f"\n## solution ({args.system}, beam {args.beam}, {extras['tokens']} tokens in {row['timings']['seconds']:.1f}s)\n")
    print(extras["output"])
    print(f"\nanswer: {row['answer']}")
    return 0
