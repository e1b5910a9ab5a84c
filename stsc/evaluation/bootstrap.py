"""Bootstrap confidence intervals for AUP.

Each model's runs on each task are resampled with replacement (as many as it has, including runs that
scored nothing), both score tables are rebuilt from the resampled runs, and AUP is recomputed on the
point estimate's grid (its ``max_tau``), so all resamples share one scale. The baseline's score is a
constant of the task and is not resampled. Intervals are percentile intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stsc.evaluation.aup import AUPResult, Interval, aup_array, ratio_arrays, run_score
from stsc.evaluation.mlgym_tasks import TaskScoring
from stsc.evaluation.runs import RunResult, safe_model_id

if TYPE_CHECKING:
    import numpy as np

_CHUNK = 64


def _group_values(
    runs: list[RunResult], scorings: Mapping[str, TaskScoring], pool: Sequence[str], tasks: Sequence[str]
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Per (model index, task index): arrays of best_run and last_run over the group's runs (NaN =
    ignored). Groups come in (model id, task id) order and runs in run-index order, so the draws of a
    seed do not depend on the order of the pool, the tasks or the runs given."""
    import numpy as np

    index_m = {safe_model_id(m): i for i, m in enumerate(pool)}
    index_t = {t: j for j, t in enumerate(tasks)}
    members: dict[tuple[str, str], list[RunResult]] = {}
    for run in runs:
        if run.model in index_m and run.task_id in index_t:
            members.setdefault((run.model, run.task_id), []).append(run)

    def arr(vals: list[float | None]) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in vals], dtype=float)

    groups = {}
    for (model, task), group in sorted(members.items()):
        scores = [
            run_score(r, scorings[task]) for r in sorted(group, key=lambda r: (r.run_index, str(r.path)))
        ]
        groups[(index_m[model], index_t[task])] = (
            arr([s.best for s in scores]),
            arr([s.last for s in scores]),
        )
    return groups


def _resampled_tables(
    result: AUPResult,
    groups: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
    sign: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Best and last score arrays of shape (samples, methods, tasks) from resampled runs."""
    import numpy as np

    n_boot, n_m, n_t = result.bootstrap_samples, len(result.pool), len(result.tasks)
    best = np.full((n_boot, n_m + 1, n_t), np.nan)
    last = np.full((n_boot, n_m + 1, n_t), np.nan)
    best[:, -1, :] = result.best_scores.array()[-1]
    last[:, -1, :] = result.last_scores.array()[-1]
    for (i, j), (best_runs, last_runs) in groups.items():  # in _group_values' order
        idx = rng.integers(0, len(best_runs), size=(n_boot, len(best_runs)))
        for out, vals in ((best, best_runs), (last, last_runs)):
            signed = np.where(np.isnan(vals), -np.inf, sign[j] * vals)[idx].max(axis=1)
            out[:, i, j] = np.where(np.isneginf(signed), np.nan, sign[j] * signed)
    return best, last


def bootstrap_intervals(
    runs: Iterable[RunResult], scorings: Mapping[str, TaskScoring], result: AUPResult
) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """Percentile intervals of best and last AUP per method, resampling runs per model x task.

    Uses ``result.bootstrap_samples``, ``result.seed``, ``result.confidence`` and keeps
    ``result.max_tau`` fixed so every resample is measured on the same grid. A method's score is
    missing in a resample whose drawn runs all lack the metric.
    """
    import numpy as np

    assert result.bootstrap_samples > 0 and 0 < result.confidence < 1
    groups = _group_values(list(runs), scorings, result.pool, result.tasks)
    higher = np.array([scorings[t].higher_is_better for t in result.tasks], dtype=bool)
    sign = np.where(higher, 1.0, -1.0)
    rng = np.random.default_rng(result.seed)
    best, last = _resampled_tables(result, groups, sign, rng)
    alpha = (1 - result.confidence) / 2 * 100
    intervals = []
    for scores in (best, last):
        aups = np.concatenate(
            [
                aup_array(ratio_arrays(scores[k : k + _CHUNK], higher)[0], result.max_tau)
                for k in range(0, len(scores), _CHUNK)
            ]
        )
        lo, hi = np.percentile(aups, [alpha, 100 - alpha], axis=0)
        intervals.append(
            {
                m: Interval(round(float(a), 3), round(float(b), 3))
                for m, a, b in zip(result.methods, lo, hi, strict=True)
            }
        )
    return intervals[0], intervals[1]


PAIRED_FILE = "paired.json"  # the evaluate stage's SFT-vs-base comparison, read by the report


@dataclass(frozen=True)
class PairedComparison:
    """``model`` against ``reference`` on the same tasks: the AUP differences (model minus
    reference) with percentile intervals from resampling *tasks*, and per-task wins, ties and losses
    on the best-attempt performance ratio (lower is better; ties are equal ratios)."""

    model: str
    reference: str
    best_delta: float
    last_delta: float
    best_ci: Interval
    last_ci: Interval
    wins: int
    ties: int
    losses: int
    tasks: int
    samples: int
    confidence: float

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "reference": self.reference,
            "best_delta": self.best_delta,
            "best_delta_lo": self.best_ci.lo,
            "best_delta_hi": self.best_ci.hi,
            "last_delta": self.last_delta,
            "last_delta_lo": self.last_ci.lo,
            "last_delta_hi": self.last_ci.hi,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "tasks": self.tasks,
            "samples": self.samples,
            "confidence": self.confidence,
        }

    def sentence(self) -> str:
        """One line for logs and the printed report."""
        return describe_paired(self.as_dict())


def suite_tasks(suite: str | None) -> str:
    """What the tasks of ``suite`` are called in reports."""
    return {"library": "held-out tasks", "mlgym": "MLGym tasks"}.get(suite or "", "tasks")


def describe_paired(p: Mapping[str, Any]) -> str:
    """The line stating a paired comparison, from its ``as_dict`` form (also read back from
    ``paired.json``, whose ``suite`` names the tasks resampled)."""
    return (
        f"{p['model']} - {p['reference']}: best AUP {p['best_delta']:+.3f} "
        f"[{p['best_delta_lo']:+.3f}, {p['best_delta_hi']:+.3f}], last AUP {p['last_delta']:+.3f} "
        f"[{p['last_delta_lo']:+.3f}, {p['last_delta_hi']:+.3f}] "
        f"({round(p['confidence'] * 100)}% interval over resampled {suite_tasks(p.get('suite'))}); per task "
        f"(best attempt) {p['wins']} better, {p['ties']} tied, {p['losses']} worse"
    )


def paired_comparison(
    result: AUPResult, model: str, reference: str, samples: int, seed: int = 0, confidence: float = 0.95
) -> PairedComparison:
    """Compare two methods of one AUP result by resampling its tasks with replacement.

    The penalised ratios of every task come from the whole pool and stay fixed; each resample draws
    as many tasks as there are and recomputes both methods' AUP on the result's ``max_tau`` grid, so
    the interval measures how much the difference depends on which tasks were drawn (the question
    for held-out tasks), not on run-to-run noise (which ``bootstrap_intervals`` covers). Raises
    ``ValueError`` for a method not in the result or ``samples < 1``.
    """
    import numpy as np

    for name in (model, reference):
        if name not in result.methods:
            raise ValueError(f"{name!r} is not a method of this AUP result ({list(result.methods)})")
    if samples < 1 or not 0 < confidence < 1:
        raise ValueError(f"samples={samples} must be >= 1 and confidence={confidence} in (0, 1)")
    i, j = result.methods.index(model), result.methods.index(reference)
    rng = np.random.default_rng(seed)
    n_t = len(result.tasks)
    idx = rng.integers(0, n_t, size=(samples, n_t))
    alpha = (1 - confidence) / 2 * 100
    deltas, intervals = [], []
    for table in (result.best_ratios, result.last_ratios):
        ratios = table.ratios.array()[[i, j]]  # (2, tasks)
        point = aup_array(ratios, result.max_tau)
        deltas.append(round(float(point[0] - point[1]), 3))
        drawn = aup_array(ratios[:, idx].transpose(1, 0, 2), result.max_tau)  # (samples, 2)
        lo, hi = np.percentile(drawn[:, 0] - drawn[:, 1], [alpha, 100 - alpha])
        intervals.append(Interval(round(float(lo), 3), round(float(hi), 3)))
    best = result.best_ratios.ratios.array()
    wins = int(np.sum(best[i] < best[j]))
    losses = int(np.sum(best[i] > best[j]))
    return PairedComparison(
        model=model, reference=reference, best_delta=deltas[0], last_delta=deltas[1],
        best_ci=intervals[0], last_ci=intervals[1], wins=wins, ties=n_t - wins - losses, losses=losses,
        tasks=n_t, samples=samples, confidence=confidence,
    )  # fmt: skip
