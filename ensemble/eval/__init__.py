"""The one evaluation engine of every task: work list, per-item seeds, resumable rows, tables.

``evaluate_local`` runs in-process; ``actors.evaluation.evaluate_on_ray`` runs the same work list on a
pool of Ray solver workers. Both append rows in the one format (``ensemble.contracts.make_row``) to a
:class:`~ensemble.results.ResultsFile` keyed by (item id, config hash, seed).
"""

from ensemble.eval.engine import EvalReport, Unit, evaluate_local, pending_units, select_rows, work_list
from ensemble.eval.seeds import run_seed
from ensemble.eval.table import mean_ci, metric_table

__all__ = ["EvalReport", "Unit", "evaluate_local", "mean_ci", "metric_table", "pending_units", "run_seed",
           "select_rows", "work_list"]
