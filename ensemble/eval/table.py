"""Markdown tables of result rows: means with 95 % intervals, per system."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt(value: Any) -> str:
    """Render a cell: floats with 3 decimals, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(header)]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths, strict=True)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % interval (normal approximation, sample standard deviation;
    for a 0/1 metric this is the Wald interval). One value has no interval (half-width 0)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean difference ``b − a`` over paired items and its 95 % paired-bootstrap interval.

    Items are resampled with replacement ``n_boot`` times (the same draw for both systems, so what the
    two share cancels); the interval is the 2.5th and 97.5th percentiles of the resampled differences.

    Args:
        a, b: one metric per item, in the same item order.

    Returns:
        ``(difference, low, high)``.
    """
    import random

    if len(a) != len(b) or not a:
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty lists (got {len(a)} and {len(b)})")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    n, rng = len(diffs), random.Random(seed)
    boots = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_boot))
    return sum(diffs) / n, boots[int(0.025 * n_boot)], boots[min(n_boot - 1, int(0.975 * n_boot))]


def paired_table(rows: Sequence[dict[str, Any]], pairs: Sequence[tuple[str, str]]) -> str:
    """Markdown: per ``(reference, system)`` pair, the items both ran and ``system − reference`` in
    points with its 95 % paired-bootstrap interval."""
    out = []
    for ref, system in pairs:
        by_ref = {r["item_id"]: float(r["metric"]) for r in rows if r["system"] == ref}
        by_sys = {r["item_id"]: float(r["metric"]) for r in rows if r["system"] == system}
        common = sorted(set(by_ref) & set(by_sys))
        if not common:
            continue
        d, lo, hi = paired_bootstrap([by_ref[i] for i in common], [by_sys[i] for i in common])
        out.append([f"{system} − {ref}", len(common), f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"])
    return markdown_table(["difference", "items", "points (95 % paired bootstrap)"], out)


def pct(mean: float, half: float) -> str:
    """``"61.0 ± 6.8"`` for a fraction in [0, 1] shown in percent."""
    return f"{100 * mean:.1f} ± {100 * half:.1f}"


def metric_table(rows: Sequence[dict[str, Any]], systems: Sequence[str], percent: bool = True,
                 metric_name: str = "metric") -> str:
    """One line per system: items, mean metric ± 95 % interval, mean seconds per item."""
    out = []
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        if not mine:
            continue
        mean, half = mean_ci([float(r["metric"]) for r in mine])
        shown = pct(mean, half) if percent else f"{mean:.3f} ± {half:.3f}"
        secs = sum(float(r["timings"]["seconds"]) for r in mine) / len(mine)
        out.append([system, len(mine), shown, secs])
    unit = " % (95 % CI)" if percent else " (95 % CI)"
    return markdown_table(["system", "items", metric_name + unit, "s / item"], out)


def compare_table(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]], system: str,
                  labels: Sequence[str]) -> str:
    """Markdown: ``system`` in two sets of rows (e.g. two results files), on the items both hold.

    Rows are paired by (item id, seed); each set must hold one configuration of ``system`` (else the
    pairing would mix models). Returns per set the items, accuracy ± 95 % interval and seconds per item,
    then ``b − a`` in points with its 95 % paired-bootstrap interval.

    Raises:
        ValueError: a set without rows of ``system``, with several configurations of it, or no common items.
    """
    keyed = []
    for rows, label in zip((rows_a, rows_b), labels, strict=True):
        mine = [r for r in rows if r["system"] == system]
        hashes = {r["config_hash"] for r in mine}
        if not mine:
            raise ValueError(f"{label}: no rows of system {system!r} (systems there: "
                             f"{sorted({r['system'] for r in rows})})")
        if len(hashes) > 1:
            raise ValueError(f"{label}: {len(hashes)} configurations of {system!r} in one file; compare files "
                             "that each hold one")
        keyed.append({(r["item_id"], r["seed"]): r for r in mine})
    common = sorted(set(keyed[0]) & set(keyed[1]))
    if not common:
        raise ValueError(f"{labels[0]} and {labels[1]} share no (item, seed) of {system!r}")
    out = []
    for label, by_key in zip(labels, keyed, strict=True):
        values = [float(by_key[k]["metric"]) for k in common]
        secs = sum(float(by_key[k]["timings"]["seconds"]) for k in common) / len(common)
        out.append([f"{label} ({system})", len(common), pct(*mean_ci(values)), secs])
    table = markdown_table(["system", "items", "accuracy % (95 % CI)", "s / item"], out)
    d, lo, hi = paired_bootstrap([float(keyed[0][k]["metric"]) for k in common],
                                 [float(keyed[1][k]["metric"]) for k in common])
    won = sum(keyed[1][k]["metric"] > keyed[0][k]["metric"] for k in common)
    lost = sum(keyed[1][k]["metric"] < keyed[0][k]["metric"] for k in common)
    diff = markdown_table(["difference", "items", "won / lost", "points (95 % paired bootstrap)"],
                          [[f"{labels[1]} − {labels[0]}", len(common), f"{won} / {lost}",
                            f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"]])
    return table + "\n\n" + diff
