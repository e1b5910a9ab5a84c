"""Bootstrap confidence intervals for AUP.

Each model's runs on each task are resampled with replacement (as many as it has, including runs that
scored nothing), both score tables are rebuilt from the resampled runs, and AUP is recomputed on the
point estimate's grid (its ``max_tau``), so all resamples share one scale. The baseline's score is a
constant of the task and is not resampled. Intervals are percentile intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from stsc.evaluation.aup import AUPResult, Interval, RunScore, aup_array, ratio_arrays, run_score
from stsc.evaluation.mlgym_tasks import TaskScoring
from stsc.evaluation.runs import RunResult, safe_model_id

if TYPE_CHECKING:
    import numpy as np

_CHUNK = 64


def _group_values(
    runs: list[RunResult], scorings: Mapping[str, TaskScoring], pool: Sequence[str], tasks: Sequence[str]
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Per (model index, task index): arrays of best_run and last_run over all runs (NaN = ignored)."""
    import numpy as np

    index_m = {safe_model_id(m): i for i, m in enumerate(pool)}
    index_t = {t: j for j, t in enumerate(tasks)}
    groups: dict[tuple[int, int], list[RunScore]] = {}
    for run in runs:
        if run.model in index_m and run.task_id in index_t:
            key = (index_m[run.model], index_t[run.task_id])
            groups.setdefault(key, []).append(run_score(run, scorings[run.task_id]))

    def arr(vals: list[float | None]) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in vals], dtype=float)

    return {k: (arr([s.best for s in v]), arr([s.last for s in v])) for k, v in groups.items()}


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
    for (i, j), (best_runs, last_runs) in sorted(groups.items()):
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
