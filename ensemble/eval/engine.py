"""Work list, resumable in-process evaluation, and the rows of one evaluation."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ensemble.contracts import Item, Solver
from ensemble.results import ResultsFile, result_key


@dataclass(frozen=True)
class Unit:
    """One piece of work: an item, a system, the evaluation seed, and the system's config hash."""

    item: Item
    system: str
    seed: int
    config_hash: str

    @property
    def key(self) -> str:
        """The results-file key of this unit's row."""
        return result_key(self.item.id, self.config_hash, self.seed)


@dataclass
class EvalReport:
    """What an evaluation run did.

    Attributes:
        total: units asked for; ``skipped``: already in the results file; ``written``: rows appended by
        this run; ``failed``: unit key → the full error of units that raised (they are not written, so
        a rerun retries them); ``rows``: this evaluation's rows in work-list order; ``duration_s``;
        ``landed_s``: seconds from the start at which each written row landed (for steady-state rates).
    """

    total: int = 0
    skipped: int = 0
    written: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    landed_s: list[float] = field(default_factory=list)

    @property
    def items_per_s(self) -> float | None:
        """Units finished by this run per second of wall time."""
        return self.written / self.duration_s if self.duration_s and self.written else None

    def steady_items_per_s(self, workers: int = 1) -> float | None:
        """Units per second once every worker has landed its first row: ``(n - w) / (t_n - t_w)``.

        Leaves out worker start-up, model loading and each worker's first (warm-up) item; keeps the tail
        where some workers already wait. ``None`` with too few rows.
        """
        w, t = max(1, workers), self.landed_s
        return (len(t) - w) / (t[-1] - t[w - 1]) if len(t) > w and t[-1] > t[w - 1] else None


def work_list(items: Sequence[Item], systems: Sequence[str], seeds: Sequence[int],
              hashes: dict[str, str]) -> list[Unit]:
    """Every (item, system, seed), item-major, so a partial run covers all systems evenly."""
    return [Unit(item, s, seed, hashes[s]) for seed in seeds for item in items for s in systems]


def pending_units(units: Sequence[Unit], results: ResultsFile) -> list[Unit]:
    """The units whose rows are not yet in ``results``."""
    return [u for u in units if u.key not in results]


def select_rows(results: ResultsFile, units: Sequence[Unit]) -> list[dict[str, Any]]:
    """The rows of ``units`` found in ``results``, in work-list order (rows of the earlier per-task
    formats upgraded to the one format, see :func:`upgrade_row`)."""
    by_key = {ResultsFile.key_of(r): r for r in results.rows()}
    return [upgrade_row(by_key[u.key], u) for u in units if u.key in by_key]


LEGACY_METRICS = ("correct", "accuracy", "success")
"""The metric fields of the earlier per-task row formats (math, image, robot)."""


def upgrade_row(row: dict[str, Any], unit: Unit) -> dict[str, Any]:
    """A row of an earlier per-task format (same key, so the same run) in the one row format.

    Results files written before the one engine keep counting: their config hashes are unchanged.
    """
    if "metric" in row:
        return row
    metric = next((row[k] for k in LEGACY_METRICS if k in row), None)
    if metric is None:
        raise ValueError(f"result row {ResultsFile.key_of(row)} has no metric field ({', '.join(LEGACY_METRICS)})")
    known = {"item_id", "config_hash", "seed", "system", "answer", "seconds", "moved", "energy", *LEGACY_METRICS}
    extras = {k: v for k, v in row.items() if k not in known}
    if "image" in extras:  # the image rows kept one image
        extras["images"] = [extras.pop("image")]
    scorers = {n: {"moved": c} for n, c in row.get("moved", {}).items()}
    scorers.update({n: {"energy": e} for n, e in row.get("energy", {}).items()})
    return {"item_id": row["item_id"], "system": unit.system, "config_hash": row["config_hash"], "seed": row["seed"],
            "answer": row.get("answer"), "metric": float(metric), "scorers": scorers,
            "timings": {"seconds": float(row.get("seconds", 0.0))}, "extras": extras}


def error_text(err: BaseException) -> str:
    """The full error of a failed unit: first the root cause's type and message (the useful sentence,
    also when a remote wrapper such as Ray's puts a long traceback before it), then the last frames."""
    cause = getattr(err, "cause", None)
    cause = cause if isinstance(cause, BaseException) else err
    head = f"{type(cause).__name__}: {str(cause).strip()}".rstrip(": ")
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-4))
    return f"{head}\n\n{tb.strip()}"


def evaluate_local(solver: Solver, units: Sequence[Unit], results: ResultsFile,
                   progress: Callable[[Iterable], Iterable] | None = None) -> EvalReport:
    """Run every unit not yet in ``results`` in this process, appending each row as soon as it is done.

    A unit that raises is recorded in the report (with its full error) and the run goes on.
    """
    started = time.perf_counter()
    todo = pending_units(units, results)
    report = EvalReport(total=len(units), skipped=len(units) - len(todo))
    for unit in progress(todo) if progress else todo:
        try:
            row = solver.solve(unit.item, unit.system, unit.seed)
        except Exception as err:  # noqa: BLE001 - reported; the run goes on, a rerun retries it
            report.failed[unit.key] = error_text(err)
            continue
        report.written += int(results.append(row))
        report.landed_s.append(time.perf_counter() - started)
    report.rows = select_rows(results, units)
    report.duration_s = time.perf_counter() - started
    return report
