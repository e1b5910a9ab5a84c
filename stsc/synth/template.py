"""``generator=template``: deterministic tabular tasks from a dataset's schema, no model involved.

For each dataset, ``tasks_per_dataset`` distinct (target, metric) pairs are planned round-robin over
the dataset's suggested targets (``stsc.hub.frames.suggest_targets``) and the metrics of each target's
task type. Every task gets a seeded train/validation/test split of the table (row ids assigned after
shuffling, so row order carries no signal), a weak decision-tree ``baseline.py`` that leaves headroom,
a dependency-free ``evaluate.py`` that reads the labels from ``$STSC_PRIVATE_DIR`` (and refuses a
prediction that is not a class, for classification), a sample submission, and a dataset yaml
documenting every column. Labels of the test rows exist only in
``private/answers.csv``; ``private/public_ids.csv`` names the ``public_fraction`` of them that
``validate`` scores (the final score uses the others).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from stsc.config import GeneratorConfig
from stsc.errors import UnusableDatasetError
from stsc.hub.records import TargetSpec, TaskType
from stsc.synth.generate import GenerationResult, GenerationSource, SourceDrop
from stsc.synth.task import (
    ANSWERS,
    PRIVATE,
    STARTER_CODE,
    SUBMISSION_HEADER,
    WORKSPACE,
    DatasetConfig,
    TaskConfig,
    TaskDraft,
    TaskMeta,
    fit_id,
    slug,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ID_COLUMN = "id"
PUBLIC_IDS = "public_ids.csv"
MIN_ROWS = 40  # fewer labelled rows cannot make a train/validation/test split worth scoring


@dataclass(frozen=True)
class MetricInfo:
    """A metric evaluate.py knows: direction, bounds and the sentence the description uses."""

    name: str
    task_type: TaskType
    higher_is_better: bool
    bounds: tuple[float | None, float | None]
    phrase: str


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo(
            "accuracy",
            TaskType.CLASSIFICATION,
            True,
            (0.0, 1.0),
            "accuracy (fraction of test rows classified correctly)",
        ),
        MetricInfo(
            "macro_f1", TaskType.CLASSIFICATION, True, (0.0, 1.0), "macro-averaged F1 score over the classes"
        ),
        MetricInfo(
            "balanced_accuracy",
            TaskType.CLASSIFICATION,
            True,
            (0.0, 1.0),
            "balanced accuracy (mean recall over the true classes)",
        ),
        MetricInfo("rmse", TaskType.REGRESSION, False, (0.0, None), "root mean squared error"),
        MetricInfo("mae", TaskType.REGRESSION, False, (0.0, None), "mean absolute error"),
        MetricInfo("r2", TaskType.REGRESSION, True, (None, 1.0), "coefficient of determination (R^2)"),
    )
}
METRICS_BY_TYPE: dict[TaskType, tuple[str, ...]] = {
    t: tuple(m.name for m in METRICS.values() if m.task_type == t) for t in TaskType
}
BASELINE_DEPTH = {TaskType.CLASSIFICATION: 1, TaskType.REGRESSION: 2}


@dataclass(frozen=True)
class TemplatePlan:
    target: TargetSpec
    metric: str


def plan_tasks(targets: list[TargetSpec], n: int) -> list[TemplatePlan]:
    """Up to ``n`` distinct (target, metric) pairs: targets in turn, each target's metrics in order."""
    plans: list[TemplatePlan] = []
    if not targets:
        return plans
    limit = sum(len(METRICS_BY_TYPE[t.task_type]) for t in targets)
    i = 0
    while len(plans) < min(n, limit):
        target = targets[i % len(targets)]
        metrics = METRICS_BY_TYPE[target.task_type]
        metric = metrics[(i // len(targets)) % len(metrics)]
        plan = TemplatePlan(target, metric)
        if plan not in plans:
            plans.append(plan)
        i += 1
    return plans


def item_seed(seed: int, *parts: str) -> int:
    """A 32-bit seed for one item, derived from the run seed and the item's identity."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()
    return int(digest[:8], 16)


def script(name: str, spec: dict[str, Any]) -> str:
    """The starter script ``name`` with its ``SPEC = ...`` line set to ``spec``."""
    text = resources.files("stsc.synth.template_scripts").joinpath(name).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith("SPEC = "))
    lines[index] = f"SPEC = {spec!r}\n"
    return "".join(lines)


def _clean(text: str) -> str:
    """Text safe inside an MLGym description (``str.format`` sees no stray braces)."""
    return str(text).replace("{", "(").replace("}", ")").strip()


ROW_ID_NAMES = {"id", "idx", "index", "row_id", "rowid", "row", "unnamed: 0", "level_0"}
PROXY_RANK_CORRELATION = 0.999  # a regression feature this close to the target is a copy of it


def row_id_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """The source's own row identifiers: columns named like one, or consecutive whole numbers (a
    row number). They carry no signal, unless the rows were sorted by label, when they give it away."""
    from pandas.api import types as t

    found = []
    for column in frame.columns:
        if column == target:
            continue
        values = frame[column]
        numbers = values.dropna()
        sequence = (
            t.is_integer_dtype(values)
            and len(numbers) == len(values) > 1
            and numbers.is_unique
            and int(numbers.max()) - int(numbers.min()) == len(numbers) - 1
        )
        if str(column).strip().lower() in ROW_ID_NAMES or sequence:
            found.append(str(column))
    return found


def proxy_columns(frame: pd.DataFrame, target: TargetSpec) -> list[str]:
    """Feature columns that restate the label (on the labelled rows ``frame``): for classification
    a one-to-one relabelling of it (a text twin of a class code, other spelling or case); for
    regression a numeric column whose rank correlation with it is at least 0.999 (a rounded,
    rescaled or unit-converted copy)."""
    import pandas as pd
    from pandas.api import types as t

    y = frame[target.column]
    found = []
    for column in frame.columns:
        if column == target.column:
            continue
        x = frame[column]
        both = x.notna() & y.notna()
        if both.sum() < 2:
            continue
        if target.task_type == TaskType.REGRESSION:
            if not t.is_numeric_dtype(x) or t.is_bool_dtype(x):
                continue
            rho = pd.Series(x[both].to_numpy(float)).corr(
                pd.Series(y[both].to_numpy(float)), method="spearman"
            )
            if pd.notna(rho) and abs(rho) >= PROXY_RANK_CORRELATION:
                found.append(str(column))
        else:
            pairs = pd.DataFrame({"x": x[both].astype(str), "y": y[both].astype(str)})
            classes = pairs["y"].nunique()
            one_to_one = (
                pairs["x"].nunique() == classes
                and pairs.groupby("x")["y"].nunique().max() == 1
                and pairs.groupby("y")["x"].nunique().max() == 1
            )
            if one_to_one:
                found.append(str(column))
    return found


MAX_INT_CLASSES = 20  # an integer target with more distinct values is a quantity, not a class


def typed_targets(frame: pd.DataFrame, targets: Iterable[TargetSpec]) -> list[TargetSpec]:
    """``targets`` with the task type of integer columns settled on the data: a Hub schema says
    ``int`` without a count of distinct values, so an integer target whose class count is unknown
    and that takes more than ``MAX_INT_CLASSES`` values (a price, a count) is regression."""
    from pandas.api import types as t

    typed = []
    for target in targets:
        column = frame[target.column] if target.column in frame.columns else None
        quantity = (
            column is not None
            and target.task_type == TaskType.CLASSIFICATION
            and target.n_classes is None
            and t.is_integer_dtype(column)
            and column.nunique() > MAX_INT_CLASSES
        )
        typed.append(target.model_copy(update={"task_type": TaskType.REGRESSION}) if quantity else target)
    return typed


def labelled_table(frame: pd.DataFrame, target: TargetSpec) -> pd.DataFrame:
    """Rows with a usable label, without the columns that leak it: the record's ``exclude_features``,
    the source's row ids (``row_id_columns``) and restatements of the label (``proxy_columns``),
    and without the columns of lists or mappings (``nested_columns``)."""
    import pandas as pd

    from stsc.hub.frames import nested_columns

    if target.column == ID_COLUMN:
        raise UnusableDatasetError("target_is_id", f"the target column is named {ID_COLUMN!r}, the row id")
    nested = nested_columns(frame)
    if target.column in nested:
        raise UnusableDatasetError("nested_target", f"target {target.column!r} holds lists or mappings")
    if nested:
        log.info("%s: leaving out columns of lists or mappings: %s", target.column, nested)
    frame = frame.drop(columns=[c for c in [*target.exclude_features, *nested] if c in frame.columns])
    frame = frame.drop(columns=row_id_columns(frame, target.column))
    if target.task_type == TaskType.REGRESSION:
        frame = frame.assign(**{target.column: pd.to_numeric(frame[target.column], errors="coerce")})
    frame = frame.dropna(subset=[target.column]).reset_index(drop=True)
    proxies = proxy_columns(frame, target)
    if proxies:
        log.info("%s: dropping columns that restate the label: %s", target.column, proxies)
    return frame.drop(columns=proxies)


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    n_public: int = 0  # the first n_public test rows (already shuffled) are the public ones


def public_count(n_test: int, fraction: float) -> int:
    """Public test rows for ``fraction``: 0 (no split) unless both parts get at least one row."""
    n = round(n_test * fraction)
    return n if 0 < n < n_test else 0


def split_table(frame: pd.DataFrame, cfg: GeneratorConfig, seed: int) -> Splits:
    """Shuffle, cap to ``max_train_rows`` training rows, cut test/validation fractions, assign ids."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keep_fraction = max(1e-9, 1.0 - cfg.test_fraction - cfg.valid_fraction)
    cap = int(np.ceil(cfg.max_train_rows / keep_fraction))
    order = rng.permutation(len(frame))[:cap]
    shuffled = frame.iloc[order].reset_index(drop=True)
    shuffled.insert(0, ID_COLUMN, np.arange(len(shuffled)))
    n_test = max(1, round(len(shuffled) * cfg.test_fraction))
    n_valid = round(len(shuffled) * cfg.valid_fraction)
    test = shuffled.iloc[:n_test]
    validation = shuffled.iloc[n_test : n_test + n_valid]
    train = shuffled.iloc[n_test + n_valid :]
    return Splits(
        train.reset_index(drop=True),
        validation.reset_index(drop=True),
        test.reset_index(drop=True),
        public_count(n_test, cfg.public_fraction),
    )


def _column_doc(frame: pd.DataFrame, name: str, target: str) -> str:
    from pandas.api import types as t

    col = frame[name]
    if name == ID_COLUMN:
        return f"- {ID_COLUMN} (int): row identifier, unique across the three files"
    n_unique = int(col.nunique(dropna=True))
    if t.is_numeric_dtype(col) and not t.is_bool_dtype(col):
        kind = f"{'int' if t.is_integer_dtype(col) else 'float'}, range {col.min():.6g} to {col.max():.6g}"
    else:
        levels = sorted(map(str, col.dropna().unique()))
        shown = ", ".join(levels[:8]) + (", ..." if len(levels) > 8 else "")
        kind = f"categorical, {n_unique} levels: {shown}"
    missing = int(col.isna().sum())
    extra = f"; {missing} missing" if missing else ""
    role = " -- the prediction TARGET (absent from test.csv)" if name == target else ""
    return f"- {name} ({kind}{extra}){role}"


def dataset_description(source: GenerationSource, splits: Splits, target: TargetSpec) -> str:
    """Field-level docs of the task's data folder (MLGym DatasetConfig ``description``)."""
    record = source.record
    full = splits.train
    lines = [
        _clean(source.title or record.dataset_id or ""),
        _clean(record.description),
        f"Source: {record.dataset_id} (revision {record.revision}); licence: {record.license}"
        + (f" ({_clean(record.license_note)})" if record.license_note else "")
        + ".",
        f"Files: data/train.csv ({len(splits.train)} rows) and data/validation.csv "
        f"({len(splits.validation)} rows) hold every column; data/test.csv ({len(splits.test)} rows) "
        f"holds every column except '{target.column}'.",
        "Columns:",
        *(_column_doc(full, c, target.column) for c in full.columns),
    ]
    return "\n".join(line for line in lines if line)


def task_description(source: GenerationSource, plan: TemplatePlan, splits: Splits) -> str:
    """The agent-facing description: goal, metric, ``{dataset_docs}``, then SUBMISSION FORMAT."""
    info = METRICS[plan.metric]
    target = plan.target
    what = "class" if target.task_type == TaskType.CLASSIFICATION else "value"
    direction = "higher is better" if info.higher_is_better else "lower is better"
    topic = (
        f" This task belongs to the research topic '{_clean(source.topic_title)}'."
        if source.topic_title
        else ""
    )
    note = f" Note on the target: {_clean(target.note)}." if target.note else ""
    if target.task_type == TaskType.CLASSIFICATION:
        values = f"a class label as it appears in the '{target.column}' column of data/train.csv"
    else:
        values = "a finite number"
    return (
        f"Predict the {what} of '{target.column}' for every row of data/test.csv "
        f"({target.task_type.value} on the {_clean(source.title or source.record.dataset_id)} dataset)."
        f"{topic}{note} Labelled rows are in data/train.csv and data/validation.csv. Submissions are "
        f"scored on the hidden labels of the test rows by {info.phrase}; {direction}. baseline.py is "
        f"a deliberately simple starting point that you are expected to beat.{_split_note(splits)}\n\n"
        "{dataset_docs}\n\n"
        f"{SUBMISSION_HEADER}\n"
        f"Write submission.csv in the workspace root: a CSV file with a header and exactly two "
        f"columns, '{ID_COLUMN}' and '{target.column}', holding one row for each of the "
        f"{len(splits.test)} ids of data/test.csv (any order); each '{target.column}' value is "
        f"{values}. sample_submission.csv shows the format."
    )


def _split_note(splits: Splits) -> str:
    if not splits.n_public:
        return ""
    return (
        f" `validate` scores your submission on {splits.n_public} public test rows; the final score "
        f"of `submit` uses the other {len(splits.test) - splits.n_public}, so a validation score is "
        "an estimate, not the result."
    )


def _sample_submission(splits: Splits, target: TargetSpec) -> pd.DataFrame:
    import pandas as pd

    ids = splits.test[ID_COLUMN]
    labels = splits.train[target.column]
    if target.task_type == TaskType.CLASSIFICATION:
        classes = sorted(labels.dropna().unique(), key=str)
        values = [classes[i % len(classes)] for i in range(len(ids))]
    else:
        values = [float(labels.median())] * len(ids)
    return pd.DataFrame({ID_COLUMN: ids, target.column: values})


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def usable_table(frame: pd.DataFrame, target: TargetSpec) -> pd.DataFrame:
    """``labelled_table``, or ``UnusableDatasetError`` when the table cannot make a task for
    ``target`` (column missing, no feature column, too few labelled rows, a constant target)."""
    if target.column not in frame.columns:
        raise UnusableDatasetError("missing_target", f"target {target.column!r} is not a column of the table")
    table = labelled_table(frame, target)
    if len(table.columns) < 2:
        raise UnusableDatasetError(
            "no_features", f"no scalar feature column is left to predict {target.column!r}"
        )
    if len(table) < MIN_ROWS:
        raise UnusableDatasetError("too_few_rows", f"{len(table)} labelled rows for target {target.column!r}")
    if table[target.column].nunique() < 2:
        raise UnusableDatasetError("constant_target", f"target {target.column!r} has a single value")
    return table


def written_classes(frames: Iterable[pd.DataFrame], column: str) -> list[str]:
    """The distinct values of ``column`` in ``frames`` as their CSV files spell them (what a
    submission copies from data/train.csv), sorted."""
    import pandas as pd

    values: set[str] = set()
    for frame in frames:
        text = io.StringIO(_csv(frame[[column]]))
        values.update(pd.read_csv(text, dtype=str, keep_default_na=False)[column])
    return sorted(values)


def task_files(splits: Splits, plan: TemplatePlan) -> dict[str, bytes | str]:
    """Starter scripts, data files, sample submission and private answers of one task. A
    classification evaluate.py knows the classes of the labelled files (``written_classes``)."""
    target = plan.target
    spec = {"id_column": ID_COLUMN, "target": target.column, "task_type": target.task_type.value}
    baseline_spec = {**spec, "max_depth": BASELINE_DEPTH[target.task_type]}
    evaluate_spec: dict[str, Any] = {**spec, "metric": plan.metric}
    if target.task_type == TaskType.CLASSIFICATION:
        evaluate_spec["classes"] = written_classes([splits.train, splits.validation], target.column)
    files: dict[str, bytes | str] = {
        f"{WORKSPACE}/evaluate.py": script("evaluate_csv.py", evaluate_spec),
        f"{WORKSPACE}/baseline.py": script("baseline_tabular.py", baseline_spec),
        f"{WORKSPACE}/sample_submission.csv": _csv(_sample_submission(splits, target)),
        f"{WORKSPACE}/data/train.csv": _csv(splits.train),
        f"{WORKSPACE}/data/validation.csv": _csv(splits.validation),
        f"{WORKSPACE}/data/test.csv": _csv(splits.test.drop(columns=[target.column])),
        f"{PRIVATE}/{ANSWERS}": _csv(splits.test[[ID_COLUMN, target.column]]),
    }
    if splits.n_public:
        files[f"{PRIVATE}/{PUBLIC_IDS}"] = _csv(splits.test[[ID_COLUMN]].iloc[: splits.n_public])
    return files


def build_task(
    source: GenerationSource, frame: pd.DataFrame, plan: TemplatePlan, cfg: GeneratorConfig, seed: int
) -> TaskDraft:
    """One template task for ``plan`` on ``frame``. Raises ``UnusableDatasetError`` (see
    ``usable_table``)."""
    target, record = plan.target, source.record
    dataset_id = record.dataset_id or record.requested_id
    splits = split_table(usable_table(frame, target), cfg, item_seed(seed, dataset_id, target.column))
    info = METRICS[plan.metric]
    task_id = fit_id(f"{slug(dataset_id)}-{slug(target.column, 24)}-{slug(plan.metric)}")
    ds_name = f"{slug(dataset_id).replace('-', '_')}_{slug(target.column, 24).replace('-', '_')}"
    config = TaskConfig(
        id=task_id,
        name=f"{_clean(source.title or dataset_id)}: {target.column} ({plan.metric})",
        description=task_description(source, plan, splits),
        dataset_configs=[f"datasets/{ds_name}.yaml"],
        training_timeout=cfg.training_timeout_s,
        starter_code=list(STARTER_CODE),
    )
    dataset = DatasetConfig(
        name=ds_name, description=dataset_description(source, splits, target), data_path=f"{WORKSPACE}/data"
    )
    meta = TaskMeta(
        task_id=task_id, topic_id=source.topic_id, topic_title=source.topic_title, area=source.area,
        dataset_id=dataset_id, dataset_revision=record.revision, license=record.license,
        task_type=target.task_type.value, target=target.column, id_column=ID_COLUMN, metric=plan.metric,
        higher_is_better=info.higher_is_better, metric_bounds=info.bounds, generator="template",
        public_split=splits.n_public > 0,
    )  # fmt: skip
    return TaskDraft(config=config, datasets=[dataset], meta=meta, files=task_files(splits, plan))


class TemplateGenerator:
    """``TaskGenerator`` for ``generator.kind=template``: one source per dataset, no model calls."""

    name = "template"
    per = "dataset"

    def __init__(self, cfg: GeneratorConfig, seed: int):
        self.cfg = cfg
        self.seed = seed

    def generate(self, source: GenerationSource) -> GenerationResult:
        """Drafts for ``source``; planned tasks the table cannot support are dropped with a reason.
        Raises ``HubError`` when the table cannot be loaded."""
        from stsc.hub.frames import load_frame

        if not source.targets:
            return GenerationResult(
                drops=[SourceDrop("no_target", f"{source.record.dataset_id} has no usable target")]
            )
        frame = load_frame(source.record)
        plans = plan_tasks(typed_targets(frame, source.targets), self.cfg.tasks_per_dataset)
        result = GenerationResult()
        for plan in plans:
            try:
                result.drafts.append(build_task(source, frame, plan, self.cfg, self.seed))
            except UnusableDatasetError as e:
                result.drops.append(SourceDrop(e.reason, f"{plan.target.column}/{plan.metric}: {e}"))
        return result
