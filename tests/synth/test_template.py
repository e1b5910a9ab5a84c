"""generator=template: planning, splits, labels kept private, and the generated scripts."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stsc.config import GeneratorConfig
from stsc.hub.records import TargetSpec
from stsc.synth.generate import GenerationSource, build_sources, generate_one
from stsc.synth.task import load_task, write_task
from stsc.synth.template import TemplateGenerator, TemplatePlan, build_task, plan_tasks
from tests.synth.conftest import CLS, REG, TABLES, make_record


def _source(tmp_path: Path, dataset_id: str):
    load, targets = TABLES[dataset_id]
    record = make_record(dataset_id, load(), targets, tmp_path / "tables")
    return GenerationSource(
        dataset_id, record, "t0", "A topic", "tabular", dataset_id, tuple(targets)
    ), load()


def _run(cmd: list[str], cwd: Path, private: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STSC_PRIVATE_DIR"}
    if private is not None:
        env["STSC_PRIVATE_DIR"] = str(private)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_plans_are_distinct_target_metric_pairs_round_robin():
    species = TargetSpec(column="species", task_type=CLS)
    mass = TargetSpec(column="mass", task_type=REG)
    plans = plan_tasks([species, mass], 4)
    assert [(p.target.column, p.metric) for p in plans] == [
        ("species", "accuracy"),
        ("mass", "rmse"),
        ("species", "macro_f1"),
        ("mass", "mae"),
    ]
    assert len(plan_tasks([species], 10)) == 3, "never more tasks than distinct pairs"
    assert plan_tasks([], 3) == []


def test_splits_are_disjoint_seeded_and_labels_stay_private(tmp_path):
    source, frame = _source(tmp_path, "sklearn/iris")
    plan = TemplatePlan(source.targets[0], "accuracy")
    cfg = GeneratorConfig()
    draft = build_task(source, frame, plan, cfg, seed=0)
    files = {k: pd.read_csv(io.StringIO(v)) for k, v in draft.files.items() if k.endswith(".csv")}
    train, valid, test = (files[f"workspace/data/{n}.csv"] for n in ("train", "validation", "test"))
    answers = files["private/answers.csv"]
    assert len(train) + len(valid) + len(test) == len(frame)
    assert not set(train.id) & set(test.id) and not set(valid.id) & set(test.id)
    assert "species" not in test.columns and "species" in train.columns
    assert list(answers.columns) == ["id", "species"] and sorted(answers.id) == sorted(test.id)
    assert abs(len(test) - cfg.test_fraction * len(frame)) <= 1
    again = build_task(source, frame, plan, cfg, seed=0)
    assert again.files == draft.files, "same seed, same task"
    other = build_task(source, frame, plan, cfg, seed=1)
    assert other.files["private/answers.csv"] != draft.files["private/answers.csv"]


def test_training_rows_are_capped(tmp_path):
    source, frame = _source(tmp_path, "sklearn/diabetes")
    cfg = GeneratorConfig(max_train_rows=100)
    draft = build_task(source, frame, TemplatePlan(source.targets[0], "rmse"), cfg, seed=0)
    train = pd.read_csv(io.StringIO(draft.files["workspace/data/train.csv"]))
    assert len(train) == 100


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1", "balanced_accuracy"])
def test_evaluate_py_matches_sklearn_on_classification(tmp_path, metric):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    source, frame = _source(tmp_path, "sklearn/iris")
    cfg = GeneratorConfig(public_fraction=0.0)  # every test row scored (the split has its own test)
    draft = build_task(source, frame, TemplatePlan(source.targets[0], metric), cfg, seed=0)
    task = load_task(write_task(tmp_path / draft.task_id, draft))
    assert not (task.private / "public_ids.csv").exists() and not task.meta.public_split
    answers = pd.read_csv(task.private / "answers.csv")
    guess = answers.assign(species=["setosa" if i % 3 else "virginica" for i in range(len(answers))])
    guess.sample(frac=1.0, random_state=0).to_csv(task.workspace / "guess.csv", index=False)
    out = _run(
        [sys.executable, "evaluate.py", "--submission_file", "guess.csv"], task.workspace, task.private
    )
    assert out.returncode == 0 and out.stderr == ""
    expected = {
        "accuracy": accuracy_score(answers.species, guess.species),
        "macro_f1": f1_score(answers.species, guess.species, average="macro"),
        "balanced_accuracy": balanced_accuracy_score(answers.species, guess.species),
    }[metric]
    assert out.stdout.count("\n") == 1
    assert json.loads(out.stdout) == pytest.approx({metric: expected})


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_evaluate_py_matches_sklearn_on_regression(tmp_path, metric):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    source, frame = _source(tmp_path, "sklearn/diabetes")
    cfg = GeneratorConfig(public_fraction=0.0)
    draft = build_task(source, frame, TemplatePlan(source.targets[0], metric), cfg, seed=0)
    task = load_task(write_task(tmp_path / draft.task_id, draft))
    answers = pd.read_csv(task.private / "answers.csv")
    guess = answers.assign(progression=answers.progression * 0.8 + 20)
    guess.to_csv(task.workspace / "guess.csv", index=False)
    out = _run(
        [sys.executable, "evaluate.py", "--submission_file", "guess.csv"], task.workspace, task.private
    )
    expected = {
        "rmse": mean_squared_error(answers.progression, guess.progression) ** 0.5,
        "mae": mean_absolute_error(answers.progression, guess.progression),
        "r2": r2_score(answers.progression, guess.progression),
    }[metric]
    assert json.loads(out.stdout) == pytest.approx({metric: expected})


def test_validate_scores_the_public_rows_and_submit_the_others(tmp_path):
    from sklearn.metrics import mean_absolute_error

    source, frame = _source(tmp_path, "sklearn/diabetes")
    cfg = GeneratorConfig(public_fraction=0.3)
    draft = build_task(source, frame, TemplatePlan(source.targets[0], "mae"), cfg, seed=0)
    task = load_task(write_task(tmp_path / draft.task_id, draft))
    assert task.meta.public_split and "`validate` scores your submission on" in task.config.description
    answers = pd.read_csv(task.private / "answers.csv")
    public = set(pd.read_csv(task.private / "public_ids.csv").id)
    assert len(public) == round(0.3 * len(answers)) and public < set(answers.id)
    guess = answers.assign(progression=answers.progression * 0.8 + 20)
    guess.to_csv(task.workspace / "guess.csv", index=False)
    scores = {}
    for split in ("validate", "submit", None):
        env_split = {} if split is None else {"STSC_SCORE_SPLIT": split}
        out = subprocess.run(
            [sys.executable, "evaluate.py", "--submission_file", "guess.csv"], cwd=task.workspace,
            env={**os.environ, "STSC_PRIVATE_DIR": str(task.private), **env_split},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        scores[split] = json.loads(out.stdout)["mae"]
    rows = {"validate": answers.id.isin(public), "submit": ~answers.id.isin(public)}
    for split, mask in rows.items():
        expected = mean_absolute_error(answers.progression[mask], guess.progression[mask])
        assert scores[split] == pytest.approx(expected)
    assert scores[None] == scores["submit"], "the default is the final (submit) score"
    assert scores["validate"] != scores["submit"]
    bad = subprocess.run(
        [sys.executable, "evaluate.py", "--submission_file", "guess.csv"], cwd=task.workspace,
        env={**os.environ, "STSC_PRIVATE_DIR": str(task.private), "STSC_SCORE_SPLIT": "test"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "STSC_SCORE_SPLIT" in bad.stderr


def test_evaluate_py_refuses_bad_submissions_and_missing_labels(tmp_path):
    source, frame = _source(tmp_path, "sklearn/diabetes")
    draft = build_task(source, frame, TemplatePlan(source.targets[0], "rmse"), GeneratorConfig(), seed=0)
    task = load_task(write_task(tmp_path / draft.task_id, draft))
    ws = task.workspace
    sample = pd.read_csv(ws / "sample_submission.csv")
    sample.iloc[:-3].to_csv(ws / "short.csv", index=False)
    sample.assign(progression="n/a").to_csv(ws / "text.csv", index=False)
    pd.concat([sample, sample.iloc[:1]]).to_csv(ws / "dup.csv", index=False)
    cases = {"short.csv": "missing ids", "text.csv": "not a number", "dup.csv": "repeats id"}
    for name, message in cases.items():
        out = _run([sys.executable, "evaluate.py", "--submission_file", name], ws, task.private)
        assert out.returncode != 0 and message in out.stderr, (name, out.stderr)
    out = _run([sys.executable, "evaluate.py", "--submission_file", "sample_submission.csv"], ws, None)
    assert out.returncode != 0 and "STSC_PRIVATE_DIR" in out.stderr and out.stdout == ""


def _iris_task(tmp_path: Path, frame: pd.DataFrame):
    source, _ = _source(tmp_path, "sklearn/iris")
    plan = TemplatePlan(source.targets[0], "accuracy")
    return load_task(write_task(tmp_path / "task", build_task(source, frame, plan, GeneratorConfig(), 0)))


def _evaluate(task, submission: pd.DataFrame) -> subprocess.CompletedProcess:
    submission.to_csv(task.workspace / "guess.csv", index=False)
    return _run(
        [sys.executable, "evaluate.py", "--submission_file", "guess.csv"], task.workspace, task.private
    )


@pytest.mark.parametrize("guess", ["banana", "", "Setosa"])
def test_evaluate_py_refuses_a_prediction_that_is_not_a_class(tmp_path, guess):
    task = _iris_task(tmp_path, TABLES["sklearn/iris"][0]())
    answers = pd.read_csv(task.private / "answers.csv")
    answers.loc[3, "species"] = guess
    out = _evaluate(task, answers)
    assert out.returncode == 1 and out.stdout == ""
    assert f"1 prediction(s) are not classes of 'species' (id '{answers.id[3]}': '{guess}')" in out.stderr
    assert "one of ['setosa', 'versicolor', 'virginica']" in out.stderr


@pytest.mark.parametrize("codes", ["int", "float"])
def test_class_codes_compare_as_numbers_and_other_numbers_are_refused(tmp_path, codes):
    frame = TABLES["sklearn/iris"][0]()
    frame["species"] = frame["species"].map({"setosa": 0, "versicolor": 1, "virginica": 2}).astype(codes)
    task = _iris_task(tmp_path, frame)
    assert _run([sys.executable, "baseline.py"], task.workspace, None).returncode == 0
    baseline = _run(
        [sys.executable, "evaluate.py", "--submission_file", "submission.csv"], task.workspace, task.private
    )
    assert 0.4 < json.loads(baseline.stdout)["accuracy"] < 0.9
    answers = pd.read_csv(task.private / "answers.csv", dtype=str)
    other = {"int": lambda v: f"{int(v)}.0", "float": lambda v: str(int(float(v)))}[codes]
    respelled = _evaluate(task, answers.assign(species=answers["species"].map(other)))  # 1 for 1.0
    assert json.loads(respelled.stdout) == {"accuracy": 1.0}, respelled.stderr
    answers.loc[0, "species"] = "7"
    out = _evaluate(task, answers)
    assert out.returncode == 1 and "1 prediction(s) are not classes of 'species'" in out.stderr


def test_the_baseline_writes_a_scoreable_submission_with_headroom(tmp_path):
    source, frame = _source(tmp_path, "sklearn/iris")
    draft = build_task(source, frame, TemplatePlan(source.targets[0], "accuracy"), GeneratorConfig(), seed=0)
    task = load_task(write_task(tmp_path / draft.task_id, draft))
    assert _run([sys.executable, "baseline.py"], task.workspace, None).returncode == 0
    out = _run(
        [sys.executable, "evaluate.py", "--submission_file", "submission.csv"], task.workspace, task.private
    )
    accuracy = json.loads(out.stdout)["accuracy"]
    assert 0.4 < accuracy < 0.9, "a stump: better than chance, far from perfect"


def test_template_generation_drops_targets_a_table_cannot_support(tmp_path):
    load, _ = TABLES["sklearn/iris"]
    frame = load()
    frame["constant"] = "same"
    targets = [TargetSpec(column="species", task_type=CLS), TargetSpec(column="constant", task_type=CLS),
               TargetSpec(column="absent", task_type=REG)]  # fmt: skip
    record = make_record("sklearn/iris", frame, targets, tmp_path / "tables")
    gen = TemplateGenerator(GeneratorConfig(tasks_per_dataset=3), seed=0)
    [source] = build_sources([record, record], gen.per, {})
    row = generate_one(gen, source, tmp_path / "tasks")
    assert row["task_ids"] == ["sklearn-iris-species-accuracy"]
    assert sorted(d["reason"] for d in row["drops"]) == ["constant_target", "missing_target"]
    assert (tmp_path / "tasks" / "sklearn-iris-species-accuracy" / "task.yaml").is_file()


def test_columns_that_give_the_label_away_never_reach_the_workspace(tmp_path):
    from stsc.synth.leaks import find_label_leaks

    load, _ = TABLES["sklearn/iris"]
    frame = load().sort_values("species", kind="stable").reset_index(drop=True)
    frame.insert(0, "Id", range(1, len(frame) + 1))  # the source's row number, rows sorted by label
    frame["species_code"] = frame["species"].astype("category").cat.codes  # a relabelling
    frame["SPECIES"] = frame["species"].str.upper()  # another spelling
    frame["petal_length_mm"] = frame["petal_length"] * 10  # a feature, not the label
    record = make_record("sklearn/iris", frame, [TargetSpec(column="species", task_type=CLS)], tmp_path / "t")
    source = GenerationSource(
        "sklearn/iris", record, "t0", "A topic", "tabular", "iris", tuple(record.targets)
    )
    draft = build_task(source, frame, TemplatePlan(record.targets[0], "accuracy"), GeneratorConfig(), seed=0)
    test = pd.read_csv(io.StringIO(draft.files["workspace/data/test.csv"]))
    assert not {"Id", "species_code", "SPECIES"} & set(test.columns)
    assert {"petal_length", "petal_length_mm"} <= set(test.columns)
    write_task(tmp_path / "task", draft)
    task = load_task(tmp_path / "task")
    assert find_label_leaks(task.workspace, task.private) == []


def test_a_rescaled_copy_of_a_regression_target_is_dropped(tmp_path):
    load, targets = TABLES["sklearn/diabetes"]
    frame = load()
    target = targets[0]
    frame["target_rounded"] = frame[target.column].round(-1)  # what a leaky export might carry
    record = make_record("sklearn/diabetes", frame, [target], tmp_path / "t")
    source = GenerationSource("sklearn/diabetes", record, "t0", "A topic", "tabular", "d", (target,))
    draft = build_task(source, frame, TemplatePlan(target, "rmse"), GeneratorConfig(), seed=0)
    columns = set(pd.read_csv(io.StringIO(draft.files["workspace/data/test.csv"])).columns)
    assert "target_rounded" not in columns and len(columns) == len(load().columns)  # id in, target out


def test_r2_on_constant_true_values_follows_scikit_learn():
    import importlib.util

    from sklearn.metrics import r2_score

    path = Path(__file__).resolve().parents[2] / "stsc" / "synth" / "template_scripts" / "evaluate_csv.py"
    spec = importlib.util.spec_from_file_location("evaluate_csv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for truth, guess in (([3.0, 3.0, 3.0], [3.0, 3.0, 3.0]), ([3.0, 3.0, 3.0], [3.0, 2.0, 3.0])):
        assert module.regression_score(truth, guess, "r2") == r2_score(truth, guess)


def test_targets_whose_names_slug_alike_get_distinct_tasks_and_resume_to_the_same_ids(tmp_path):
    load, _ = TABLES["sklearn/iris"]
    frame = load()
    frame["区域"] = frame["species"].map({"setosa": "北", "versicolor": "南", "virginica": "北"})
    frame["性别"] = (frame["sepal_length"] > 5.8).map({True: "男", False: "女"})
    targets = [TargetSpec(column="区域", task_type=CLS), TargetSpec(column="性别", task_type=CLS)]
    record = make_record("sklearn/iris", frame, targets, tmp_path / "tables")
    gen = TemplateGenerator(GeneratorConfig(tasks_per_dataset=2), seed=0)
    [source] = build_sources([record], gen.per, {})
    first = generate_one(gen, source, tmp_path / "tasks")["task_ids"]
    assert len(set(first)) == 2 and first[0] == "sklearn-iris-x-accuracy"
    assert sorted(load_task(tmp_path / "tasks" / t).meta.target for t in first) == ["区域", "性别"]
    assert generate_one(gen, source, tmp_path / "tasks")["task_ids"] == first  # a resumed run
    assert len(list((tmp_path / "tasks").iterdir())) == 2


def test_an_integer_target_with_many_values_is_regression(tmp_path):
    load, _ = TABLES["sklearn/diabetes"]
    frame = load()
    frame["price"] = (frame.iloc[:, 0] * 1000).round().astype("int64") + 500  # whole dollars, many values
    frame["grade"] = frame.index % 3  # three integer classes
    targets = [TargetSpec(column="price", task_type=CLS), TargetSpec(column="grade", task_type=CLS)]
    record = make_record("sklearn/diabetes", frame, targets, tmp_path / "tables")
    gen = TemplateGenerator(GeneratorConfig(tasks_per_dataset=2), seed=0)
    [source] = build_sources([record], gen.per, {})
    row = generate_one(gen, source, tmp_path / "tasks")
    metas = {m.target: m for m in (load_task(tmp_path / "tasks" / t).meta for t in row["task_ids"])}
    assert (metas["price"].task_type, metas["price"].metric) == ("regression", "rmse")
    assert metas["grade"].task_type == "classification"


def test_columns_of_lists_or_mappings_are_left_out_of_the_task(tmp_path):
    load, targets = TABLES["sklearn/iris"]
    frame = load()
    frame["tokens"] = [["petal", str(i)] for i in range(len(frame))]  # a Hub Sequence feature
    frame["image"] = [{"bytes": b"\x89PNG", "path": None} for _ in range(len(frame))]  # an Image feature
    record = make_record("sklearn/iris", frame, targets, tmp_path / "tables")
    gen = TemplateGenerator(GeneratorConfig(tasks_per_dataset=1), seed=0)
    [source] = build_sources([record], gen.per, {})
    row = generate_one(gen, source, tmp_path / "tasks")
    assert row["task_ids"] == ["sklearn-iris-species-accuracy"] and row["drops"] == []
    task = load_task(tmp_path / "tasks" / row["task_ids"][0])
    train = pd.read_csv(task.workspace / "data" / "train.csv")
    assert not {"tokens", "image"} & set(train.columns) and "petal_length" in train.columns


def test_a_table_with_no_scalar_feature_is_dropped_with_its_reason(tmp_path):
    load, targets = TABLES["sklearn/iris"]
    frame = load()[["species"]].assign(embedding=[[0.1, 0.2]] * 150)
    record = make_record("sklearn/iris", frame, targets, tmp_path / "tables")
    gen = TemplateGenerator(GeneratorConfig(tasks_per_dataset=1), seed=0)
    [source] = build_sources([record], gen.per, {})
    row = generate_one(gen, source, tmp_path / "tasks")
    assert row["task_ids"] == [] and [d["reason"] for d in row["drops"]] == ["no_features"]


def test_long_dataset_and_target_names_still_make_valid_distinct_task_ids(tmp_path):
    from stsc.synth.task import check_task_folder

    load, _ = TABLES["sklearn/iris"]
    frame = load()
    columns = ["species_of_the_iris_flower_as_recorded", "species_of_the_iris_flower_as_labelled"]
    for column in columns:
        frame[column] = frame["species"]
    frame = frame.drop(columns=["species"])
    targets = [TargetSpec(column=c, task_type=CLS) for c in columns]
    dataset_id = "botanical-measurements-institute/iris-flower-morphology-collection"
    record = make_record(dataset_id, frame, targets, tmp_path / "tables")
    gen = TemplateGenerator(GeneratorConfig(tasks_per_dataset=6), seed=0)
    [source] = build_sources([record], gen.per, {})
    row = generate_one(gen, source, tmp_path / "tasks")
    assert len(set(row["task_ids"])) == 6 and row["drops"] == []
    for task_id in row["task_ids"]:
        problems = check_task_folder(tmp_path / "tasks" / task_id, require_score=False)
        assert problems == [], (task_id, problems)
    assert generate_one(gen, source, tmp_path / "tasks")["task_ids"] == row["task_ids"]  # a resumed run


@pytest.mark.parametrize("name", ["None", "NA", "null"])
def test_the_baseline_keeps_class_labels_that_pandas_would_read_as_missing(tmp_path, name):
    source, frame = _source(tmp_path, "sklearn/iris")
    frame["species"] = frame["species"].replace({"setosa": name})
    plan = TemplatePlan(source.targets[0], "accuracy")
    task = load_task(write_task(tmp_path / "task", build_task(source, frame, plan, GeneratorConfig(), 0)))
    baseline = _run([sys.executable, "baseline.py"], task.workspace, None)
    assert baseline.returncode == 0, baseline.stderr[-500:]
    predicted = pd.read_csv(task.workspace / "submission.csv", dtype=str, keep_default_na=False)
    assert name in set(predicted["species"])
    out = _run(
        [sys.executable, "evaluate.py", "--submission_file", "submission.csv"], task.workspace, task.private
    )
    assert 0.4 < json.loads(out.stdout)["accuracy"] < 0.9
