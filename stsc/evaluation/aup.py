"""Performance profiles and the area under them (AUP), with MLGym's semantics (reference/mlgym.md §6).

The methods are the models of an explicit comparison pool plus the pseudo-method ``baseline``.

1. Per run, ``best_run`` is the best priority-metric value of its ``agent`` entries and ``last_run``
   the metric of its last entry (none when that entry lacks it); a run with no entry holding the
   metric is ignored.
2. Per method and task, ``best@k`` / ``last@k`` is the best ``best_run`` / ``last_run`` over its runs
   (missing without a qualifying run). The baseline's score is the first ``baseline`` dict of the
   task's runs that holds the priority metric, else :attr:`TaskScoring.baseline`.
3. A score is feasible iff it is >= 0 and not worse than the baseline (the baseline constrains only
   while it is feasible itself, i.e. >= 0). Feasible ratios: ``best_p / s`` (maximise) or
   ``s / best_p`` (minimise), ``best_p`` the best feasible score; a ratio that is not finite (a zero
   denominator) counts as infeasible. Infeasible and missing methods get ``worst_p * 1.05``, with
   ``worst_p`` the largest feasible ratio (1 when no method is feasible); ``cap_p = ceil(1.05 worst_p)``.
4. ``max_tau = ceil(10 log10(max cap over tasks and both tables)) / 10``; the grid is 500 evenly
   spaced points on ``[0, max_tau]`` in log10 units; ``rho_m(tau)`` is the fraction of tasks with
   ``log10 r <= tau``; AUP is the left Riemann sum of ``rho_m`` over the grid, rounded to 3 decimals.

AUP depends on the pool (``best_p``, penalties and ``max_tau`` do), so results carry the pool and
``max_tau``. Bootstrap intervals resample each model's runs per task (with replacement, same count,
seeded) and recompute both tables on the point estimate's grid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from stsc.errors import ConfigError
from stsc.evaluation.mlgym_tasks import TaskScoring
from stsc.evaluation.runs import RunResult, safe_model_id

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

BASELINE = "baseline"
GRID_POINTS = 500
PENALTY = 1.05


@dataclass(frozen=True)
class RunScore:
    """``best_run`` and ``last_run`` of one run (mlgym.md §6.1); None where there is no value: ``best``
    when no entry holds the metric, ``last`` when the last entry does not (a final submission
    whose evaluation printed no finite value for it)."""

    best: float | None
    last: float | None


def run_score(run: RunResult, scoring: TaskScoring) -> RunScore:
    """Score one run on its priority metric: ``best`` over the entries that hold it, ``last`` the
    metric of the last entry."""
    values = run.values(scoring.metric)
    if not values:
        return RunScore(None, None)
    best = max(values) if scoring.higher_is_better else min(values)
    return RunScore(best, run.agent[-1].get(scoring.metric))


@dataclass(frozen=True)
class ScoreTable:
    """A methods x tasks table of floats; ``None`` marks a missing score."""

    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    values: tuple[tuple[float | None, ...], ...]

    @classmethod
    def from_mapping(
        cls,
        scores: Mapping[str, Mapping[str, float | None]],
        methods: Sequence[str],
        tasks: Sequence[str],
    ) -> ScoreTable:
        """Build a table from ``{method: {task: score}}``; absent entries are missing."""
        rows = tuple(tuple(scores.get(m, {}).get(t) for t in tasks) for m in methods)
        return cls(tuple(methods), tuple(tasks), rows)

    def get(self, method: str, task: str) -> float | None:
        """The score of ``method`` on ``task`` (KeyError/ValueError when either is not in the table)."""
        return self.values[self.methods.index(method)][self.tasks.index(task)]

    def rows(self) -> list[dict[str, object]]:
        """One ``{"model": method, <task>: score-or-None, ...}`` dict per method, in table order."""
        return [
            {"model": m, **dict(zip(self.tasks, row, strict=True))}
            for m, row in zip(self.methods, self.values, strict=True)
        ]

    def array(self) -> np.ndarray:
        """The values as a float array of shape (methods, tasks), NaN for missing."""
        import numpy as np

        return np.array(
            [[math.nan if v is None else v for v in row] for row in self.values], dtype=float
        ).reshape(len(self.methods), len(self.tasks))


@dataclass(frozen=True)
class RatioTable:
    """Performance ratios after penalties (every entry filled), with the per-task worst ratio and cap."""

    ratios: ScoreTable
    worst: dict[str, float]
    caps: dict[str, int]


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval, rounded like AUP."""

    lo: float
    hi: float


@dataclass(frozen=True)
class AUPResult:
    """Both AUP tables of one comparison pool.

    ``pool`` are the compared models (without ``baseline``); ``best_aup``/``last_aup`` map every
    method (pool then ``baseline``) to its AUP; ``best_ci``/``last_ci`` are empty unless
    ``bootstrap_samples > 0``.
    """

    pool: tuple[str, ...]
    tasks: tuple[str, ...]
    max_tau: float
    best_scores: ScoreTable
    last_scores: ScoreTable
    best_ratios: RatioTable
    last_ratios: RatioTable
    best_aup: dict[str, float]
    last_aup: dict[str, float]
    bootstrap_samples: int = 0
    confidence: float = 0.95
    seed: int = 0
    best_ci: dict[str, Interval] = field(default_factory=dict)
    last_ci: dict[str, Interval] = field(default_factory=dict)

    @property
    def methods(self) -> tuple[str, ...]:
        return (*self.pool, BASELINE)

    def rows(self) -> list[dict[str, object]]:
        """The ``aup.csv`` rows: model, best_aup, last_aup, then the interval bounds when computed."""
        out: list[dict[str, object]] = []
        for m in self.methods:
            row: dict[str, object] = {"model": m, "best_aup": self.best_aup[m], "last_aup": self.last_aup[m]}
            if self.bootstrap_samples > 0:
                row |= {"best_aup_lo": self.best_ci[m].lo, "best_aup_hi": self.best_ci[m].hi}
                row |= {"last_aup_lo": self.last_ci[m].lo, "last_aup_hi": self.last_ci[m].hi}
            out.append(row)
        return out


def baseline_scores(
    runs: Iterable[RunResult], scorings: Mapping[str, TaskScoring], tasks: Sequence[str]
) -> dict[str, float | None]:
    """The baseline score per task: the first run ``baseline`` dict holding the metric, else the
    :class:`TaskScoring` baseline, else None."""
    found: dict[str, float] = {}
    for run in runs:
        scoring = scorings.get(run.task_id)
        if scoring and run.task_id not in found and scoring.metric in run.baseline:
            found[run.task_id] = run.baseline[scoring.metric]
    return {t: found.get(t, scorings[t].baseline) for t in tasks}


def _best_of(values: list[float], higher: bool) -> float | None:
    if not values:
        return None
    return max(values) if higher else min(values)


def score_tables(
    runs: Iterable[RunResult],
    scorings: Mapping[str, TaskScoring],
    pool: Sequence[str],
    tasks: Sequence[str],
) -> tuple[ScoreTable, ScoreTable]:
    """The best@k and last@k tables, methods = ``pool`` + ``baseline``, over ``tasks``.

    Runs of models or tasks outside the pool are ignored (except as a source of baseline scores).
    """
    runs = list(runs)
    best: dict[str, dict[str, float | None]] = {m: {} for m in pool}
    last: dict[str, dict[str, float | None]] = {m: {} for m in pool}
    per_group: dict[tuple[str, str], list[RunScore]] = {}
    for run in runs:
        if run.task_id in tasks:
            per_group.setdefault((run.model, run.task_id), []).append(run_score(run, scorings[run.task_id]))
    for m in pool:
        for t in tasks:
            higher = scorings[t].higher_is_better
            scores = per_group.get((safe_model_id(m), t), [])
            best[m][t] = _best_of([s.best for s in scores if s.best is not None], higher)
            last[m][t] = _best_of([s.last for s in scores if s.last is not None], higher)
    base = baseline_scores(runs, scorings, tasks)
    best[BASELINE] = dict(base)
    last[BASELINE] = dict(base)
    methods = (*pool, BASELINE)
    return ScoreTable.from_mapping(best, methods, tasks), ScoreTable.from_mapping(last, methods, tasks)


def ratio_arrays(scores: np.ndarray, higher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Penalised ratios and worst feasible ratio for scores of shape (..., methods, tasks).

    The last method is the baseline; ``higher`` has shape (tasks,).
    """
    import numpy as np

    sign = np.where(higher, 1.0, -1.0)
    base = scores[..., -1:, :]
    present = np.isfinite(scores)
    base_feasible = np.isfinite(base) & (base >= 0)
    with np.errstate(invalid="ignore"):
        not_worse = ~base_feasible | (sign * scores >= sign * base)
        feasible = present & (scores >= 0) & not_worse
    best_signed = np.where(feasible, sign * scores, -np.inf).max(axis=-2, keepdims=True)
    best = sign * best_signed
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(higher, best / scores, scores / best)
    ratio = np.where(feasible & (scores == best), 1.0, ratio)
    feasible &= np.isfinite(ratio)
    worst = np.where(feasible, ratio, -np.inf).max(axis=-2)
    worst = np.where(feasible.any(axis=-2), worst, 1.0)
    return np.where(feasible, ratio, worst[..., None, :] * PENALTY), worst


def performance_ratios(table: ScoreTable, higher_is_better: Mapping[str, bool]) -> RatioTable:
    """Ratios with penalties for a best@k or last@k table whose last method is ``baseline``."""
    import numpy as np

    assert table.methods and table.methods[-1] == BASELINE, "the baseline must be the last method"
    higher = np.array([higher_is_better[t] for t in table.tasks], dtype=bool)
    ratios, worst = ratio_arrays(table.array(), higher)
    values = tuple(tuple(float(v) for v in row) for row in ratios)
    return RatioTable(
        ratios=ScoreTable(table.methods, table.tasks, values),
        worst={t: float(w) for t, w in zip(table.tasks, worst, strict=True)},
        caps={t: math.ceil(float(w) * PENALTY) for t, w in zip(table.tasks, worst, strict=True)},
    )


def max_tau_for(caps: Iterable[int]) -> float:
    """``ceil(10 log10(max cap)) / 10``; the rounding guard keeps exact powers of ten exact."""
    return math.ceil(round(10 * math.log10(max(caps)), 9)) / 10


def tau_grid(max_tau: float) -> np.ndarray:
    """The 500 evenly spaced profile points on ``[0, max_tau]`` (log10 units)."""
    import numpy as np

    return np.linspace(0.0, max_tau, GRID_POINTS)


def aup_array(ratios: np.ndarray, max_tau: float) -> np.ndarray:
    """Unrounded AUP over the last axis (tasks) of a ratio array of shape (..., tasks)."""
    import numpy as np

    tau = tau_grid(max_tau)
    logs = np.log10(ratios)
    rho = (logs[..., None, :] <= tau[:-1, None]).mean(axis=-1)
    return (rho * np.diff(tau)).sum(axis=-1)


def profile(ratios: ScoreTable, max_tau: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The grid and ``rho_m`` on it for every method of a ratio table."""
    import numpy as np

    tau = tau_grid(max_tau)
    logs = np.log10(ratios.array())
    rho = (logs[:, None, :] <= tau[None, :, None]).mean(axis=-1)
    return tau, {m: rho[i] for i, m in enumerate(ratios.methods)}


def aup_scores(ratios: ScoreTable, max_tau: float) -> dict[str, float]:
    """AUP per method of a ratio table, rounded to 3 decimals."""
    values = aup_array(ratios.array(), max_tau)
    return {m: round(float(v), 3) for m, v in zip(ratios.methods, values, strict=True)}


def _check_inputs(
    runs: list[RunResult],
    scorings: Mapping[str, TaskScoring],
    pool: Sequence[str],
    tasks: Sequence[str] | None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pool = tuple(pool)
    pool_ids = [safe_model_id(m) for m in pool]
    if not pool:
        raise ConfigError("the comparison pool is empty; name at least one model")
    if BASELINE in pool or len(set(pool_ids)) != len(pool):
        raise ConfigError(f"pool {list(pool)} repeats a model or uses the reserved name {BASELINE!r}")
    ran = {(r.model, r.task_id) for r in runs}
    for model, model_id in zip(pool, pool_ids, strict=True):
        if not any(m == model_id for m, _ in ran):
            logger.warning("model %s of the pool has no runs; it is scored as missing on every task", model)
    if tasks is None:
        tasks = sorted({t for m, t in ran if m in pool_ids})
    task_ids = tuple(tasks)
    if not task_ids or len(set(task_ids)) != len(task_ids):
        raise ConfigError(f"tasks {list(task_ids)} are empty or repeated; the pool {list(pool)} ran none?")
    unknown = [t for t in task_ids if t not in scorings]
    if unknown:
        raise ConfigError(
            f"no priority metric/direction known for tasks {unknown}; pass their task folders "
            "(meta.json with metric, higher_is_better) or restrict the tasks"
        )
    return pool, task_ids


def compute_aup(
    runs: Iterable[RunResult],
    scorings: Mapping[str, TaskScoring],
    pool: Sequence[str],
    tasks: Sequence[str] | None = None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
) -> AUPResult:
    """Best and last AUP of ``pool`` + ``baseline`` over ``tasks`` (default: every task the pool ran).

    Model names in ``pool`` may use ``/``; they match run folders by their folder-safe id. With
    ``bootstrap > 0``, percentile intervals at level ``confidence`` come from that many resamples
    drawn with ``numpy.random.default_rng(seed)``. A pool model without runs is scored as missing
    everywhere (and logged). Raises :class:`ConfigError` for an empty or repeated pool, a model named
    ``baseline``, no or repeated tasks, tasks without a :class:`TaskScoring`, or invalid bootstrap
    settings.
    """
    if bootstrap < 0 or not 0 < confidence < 1:
        raise ConfigError(f"bootstrap={bootstrap} must be >= 0 and confidence={confidence} in (0, 1)")
    runs = list(runs)
    pool, task_ids = _check_inputs(runs, scorings, pool, tasks)
    best, last = score_tables(runs, scorings, pool, task_ids)
    higher = {t: scorings[t].higher_is_better for t in task_ids}
    best_r, last_r = performance_ratios(best, higher), performance_ratios(last, higher)
    max_tau = max_tau_for([*best_r.caps.values(), *last_r.caps.values()])
    result = AUPResult(
        pool=pool,
        tasks=task_ids,
        max_tau=max_tau,
        best_scores=best,
        last_scores=last,
        best_ratios=best_r,
        last_ratios=last_r,
        best_aup=aup_scores(best_r.ratios, max_tau),
        last_aup=aup_scores(last_r.ratios, max_tau),
        bootstrap_samples=bootstrap,
        confidence=confidence,
        seed=seed,
    )
    if bootstrap > 0:
        from stsc.evaluation.bootstrap import bootstrap_intervals

        best_ci, last_ci = bootstrap_intervals(runs, scorings, result)
        result = replace(result, best_ci=best_ci, last_ci=last_ci)
    return result


def _csv_text(rows: list[dict[str, object]], number_format: str | None = None) -> str:
    import csv
    import io

    def cell(value: object) -> object:
        if value is None:
            return ""
        if number_format and isinstance(value, float):
            return format(value, number_format)
        return value

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def write_aup_outputs(
    result: AUPResult, out_dir: Path, *, plot: bool = True, suite: str | None = None
) -> list[Path]:
    """Write the files of one AUP result into ``out_dir`` (created) and return their paths.

    ``aup.csv`` (model, best_aup, last_aup, then interval bounds when bootstrapped; one row per pool
    model and one ``baseline`` row), ``best_scores.csv`` and ``last_scores.csv`` (one row per method,
    one column per task, empty = missing), ``aup.json`` (pool, tasks, max_tau, caps, bootstrap
    settings, the AUP rows, the ``suite`` name when given) and, with ``plot``,
    ``performance_profile.png``.
    """
    from stsc.store import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    paths = [out_dir / n for n in ("aup.csv", "best_scores.csv", "last_scores.csv", "aup.json")]
    atomic_write_text(paths[0], _csv_text(result.rows(), ".3f"))
    atomic_write_text(paths[1], _csv_text(result.best_scores.rows()))
    atomic_write_text(paths[2], _csv_text(result.last_scores.rows()))
    summary = {
        "pool": list(result.pool),
        "suite": suite,
        "tasks": list(result.tasks),
        "max_tau": result.max_tau,
        "caps": {"best": result.best_ratios.caps, "last": result.last_ratios.caps},
        "bootstrap_samples": result.bootstrap_samples,
        "confidence": result.confidence,
        "seed": result.seed,
        "aup": result.rows(),
    }
    atomic_write_json(paths[3], summary)
    if plot:
        from stsc.evaluation.plots import plot_performance_profiles

        paths.append(plot_performance_profiles(result, out_dir / "performance_profile.png"))
    return paths
