"""Systems named ``<base>@<beam>`` over an LM and its scorers (the token-rule tasks: math, video QA).

A base is ``"lm"`` (the LM alone), a scorer name, or ``"ensemble"``; the beam size is part of the
system. Their table compares every guided system with the LM alone at the same beam (won / lost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ensemble.eval.table import markdown_table, mean_ci

LM_ALONE = "lm"
ENSEMBLE = "ensemble"


def split_system(system: str, bases: Sequence[str]) -> tuple[str, int]:
    """``"ensemble@5"`` → ``("ensemble", 5)``; a bare base means beam 1. Clear errors for the rest."""
    base, _, beam = system.partition("@")
    if base not in bases:
        raise ValueError(f"unknown system {system!r}; valid systems: <base>@<beam> with base one of "
                         f"{', '.join(bases)} (e.g. ensemble@5)")
    try:
        size = int(beam) if beam else 1
    except ValueError:
        raise ValueError(f"system {system!r}: the beam size after '@' must be an integer") from None
    if size < 1:
        raise ValueError(f"system {system!r}: beam size must be >= 1")
    return base, size


def same_beam_lm(system: str) -> str:
    """The LM-alone system a guided system is compared with: the LM at the same beam size."""
    return f"{LM_ALONE}@{system.partition('@')[2] or 1}"


def beam_rows(rows: Sequence[dict[str, Any]], systems: Sequence[str], tokens: bool = False,
              reference: Callable[[str], str] = same_beam_lm) -> list[list[Any]]:
    """Table rows ``[base, beam, n, accuracy % ± CI, won / lost vs the LM alone, seconds/item(, tokens/s)]``.

    "won / lost" counts the items a guided system solved where the LM alone (``reference(system)``, by
    default the same beam) failed, and failed where it solved, over the items both ran ("–" for the LM
    itself or without LM rows).
    """
    table = []
    for system in systems:
        base, _, beam = system.partition("@")
        sel = [r for r in rows if r["system"] == system]
        if not sel:
            continue
        lm = {r["item_id"]: r["metric"] for r in rows if r["system"] == reference(system)}
        n = len(sel)
        mean, half = mean_ci([r["metric"] for r in sel])
        secs = sum(r["timings"]["seconds"] for r in sel)
        both = [r for r in sel if r["item_id"] in lm]
        vs_lm = "–" if base == LM_ALONE or not both else (
            f"{sum(r['metric'] and not lm[r['item_id']] for r in both):g} / "
            f"{sum(lm[r['item_id']] and not r['metric'] for r in both):g}")
        line = [base, int(beam or 1), n, f"{100 * mean:.1f} ± {100 * half:.1f}", vs_lm, secs / n]
        if tokens:
            line.append(sum(r["extras"].get("tokens", 0) for r in sel) / max(secs, 1e-9))
        table.append(line)
    return table


def beam_table(rows: Sequence[dict[str, Any]], systems: Sequence[str], noun: str = "items", tokens: bool = False,
               reference: Callable[[str], str] = same_beam_lm) -> str:
    """Markdown of :func:`beam_rows`; ``noun`` names the items (problems, questions)."""
    header = ["system", "beam", noun, "accuracy % (95 % CI)", "won / lost vs LM alone", f"s / {noun.rstrip('s')}"]
    return markdown_table(header + (["tokens / s"] if tokens else []), beam_rows(rows, systems, tokens, reference))


def beam_pairs(systems: Sequence[str]) -> list[tuple[str, str]]:
    """The paired comparisons of a beam table: at each beam, every guided system against the LM alone and
    the ensemble against each single scorer, as ``(reference, system)``."""
    pairs = []
    for system in systems:
        base, beam = system.partition("@")[0], system.partition("@")[2] or "1"
        if base != LM_ALONE:
            pairs.append((f"{LM_ALONE}@{beam}", system))
        if base == ENSEMBLE:
            pairs += [(other, system) for other in systems
                      if (other.partition("@")[2] or "1") == beam and other.partition("@")[0] not in (LM_ALONE, ENSEMBLE)]
    return pairs


def beam_table_paired(rows: Sequence[dict[str, Any]], systems: Sequence[str], noun: str = "items",
                      tokens: bool = False) -> str:
    """:func:`beam_table`, then :func:`beam_pairs`' differences in points with 95 % paired-bootstrap intervals."""
    from ensemble.eval.table import paired_table

    pairs = beam_pairs(systems)
    paired = paired_table(rows, pairs) if pairs else ""
    return beam_table(rows, systems, noun, tokens) + ("\n\n" + paired if paired.count("\n") > 1 else "")
