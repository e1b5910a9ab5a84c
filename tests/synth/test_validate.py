"""The validate stage: gates, the self-debug loop (real litellm + loopback server), resume."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from stsc.hub.records import TargetSpec, TaskType, VerifiedDataset
from stsc.sandbox import make_factory
from stsc.store import iter_jsonl
from stsc.synth.checks import CheckResult, check_task
from stsc.synth.generate import run_generate
from stsc.synth.leaks import find_label_leaks
from stsc.synth.library import list_tasks
from stsc.synth.task import check_task_folder, load_task
from stsc.synth.validate import run_validate
from tests.synth.conftest import (
    BASELINE,
    EVALUATE,
    EVALUATE_CHATTY,
    EVALUATE_CRASH,
    EVALUATE_EXPLOITABLE,
    EVALUATE_NO_SPLIT,
    PREPARE,
    fake_llm,
    fix_answer,
    make_ctx,
    make_record,
    root_config,
    run_stages,
    task_answer,
    write_verify_output,
)


def _rejected(validate_dir: Path) -> dict[str, dict]:
    return {r["task_id"]: r for r in iter_jsonl(validate_dir / "rejected.jsonl")}


# -- template tasks: gates only ---------------------------------------------------------------------


def test_template_tasks_are_accepted_with_their_baseline_recorded(template_library):
    tasks = list_tasks(template_library)
    assert [t.task_id for t in tasks] == [
        "sklearn-diabetes-progression-mae",
        "sklearn-diabetes-progression-rmse",
        "sklearn-iris-species-accuracy",
        "sklearn-iris-species-macro-f1",
    ]
    for task in tasks:
        assert check_task_folder(task.path) == [], task.task_id
        assert task.config.baseline_scores == [{task.meta.metric: task.meta.baseline_score}]
        # the baseline is also scored on the public rows, the score `validate` shows beside the agent's
        assert task.meta.public_split and set(task.meta.public_baseline_scores) == {task.meta.metric}
        assert task.meta.public_baseline_scores[task.meta.metric] != task.meta.baseline_score
        assert not (task.path / "build").exists() and task.meta.id_column == "id"
        [history] = task.meta.self_debug_history
        assert history.step == "ok" and "no model to fix with" in history.skipped
    assert not (template_library / ".work").exists(), "scratch copies are cleaned up"


def test_a_rerun_skips_decided_tasks(template_library, tmp_path):
    generate_dir = tmp_path / "generate"
    shutil.copytree(template_library.parent / "generate", generate_dir)
    out = tmp_path / "validate"
    shutil.copytree(template_library, out)
    for draft in (generate_dir / "tasks").iterdir():
        (draft / "workspace" / "baseline.py").write_text("raise SystemExit(1)\n")  # would now fail
    ctx = make_ctx(tmp_path, "validate", {"generate": generate_dir})
    run_validate(root_config(tmp_path), ctx)
    assert ctx.report.items_in == 4 and ctx.report.items_out == 4 and not ctx.report.drops
    assert {r["status"] for r in ctx.tables["validation"]} == {"accepted"}


def _tamper(generate_dir: Path) -> dict[str, str]:
    """Break two drafts: one leaks the test labels, one cannot finish within its timeout."""
    leaky, slow = sorted((generate_dir / "tasks").iterdir())[2:4]
    answers = pd.read_csv(leaky / "private" / "answers.csv")
    answers.rename(columns={"species": "kind"}).to_csv(
        leaky / "workspace" / "data" / "extra.csv", index=False
    )
    config = yaml.safe_load((slow / "task.yaml").read_text())
    config["training_timeout"] = 0
    (slow / "task.yaml").write_text(yaml.safe_dump(config))
    return {leaky.name: "gate:no_leak", slow.name: "gate:runtime"}


def test_leaks_and_slow_tasks_are_rejected_and_each_gate_is_a_switch(template_library, tmp_path):
    generate_dir = tmp_path / "generate"
    shutil.copytree(template_library.parent / "generate", generate_dir)
    expected = _tamper(generate_dir)
    for other in sorted((generate_dir / "tasks").iterdir())[:2]:
        shutil.rmtree(other)
    ctx = make_ctx(tmp_path, "validate", {"generate": generate_dir})
    run_validate(root_config(tmp_path), ctx)
    rejected = _rejected(ctx.out_dir)
    assert {k: v["reason"] for k, v in rejected.items()} == expected
    leak_id = next(k for k, v in expected.items() if v == "gate:no_leak")
    assert "data/extra.csv column 'kind' matches private/answers.csv" in rejected[leak_id]["message"]
    assert ctx.report.items_out == 0 and dict(ctx.report.drops) == {"gate:no_leak": 1, "gate:runtime": 1}
    relaxed = make_ctx(tmp_path / "relaxed", "validate", {"generate": generate_dir})
    run_validate(root_config(tmp_path, gate_no_leak=False, gate_runtime=False), relaxed)
    assert relaxed.report.items_out == 2, "with the gates off the same tasks pass"


def test_the_leak_check_finds_labels_only_where_they_are(template_library, tmp_path):
    task = list_tasks(template_library)[2]
    assert find_label_leaks(task.workspace, task.private) == []
    workspace = tmp_path / "ws"
    shutil.copytree(task.workspace, workspace)
    shutil.copy(task.private / "answers.csv", workspace / "data" / "extra.csv")
    answers = pd.read_csv(task.private / "answers.csv")
    answers[["species"]].to_csv(workspace / "labels_in_row_order.csv", index=False)
    leaks = "\n".join(find_label_leaks(workspace, task.private))
    assert "data/extra.csv is a copy of private/answers.csv" in leaks
    assert "labels_in_row_order.csv column 'species'" in leaks


def _species_codes(answers: pd.DataFrame) -> pd.DataFrame:
    return answers.assign(species=answers["species"].astype("category").cat.codes)


LABEL_FORMS = {  # how a workspace file could carry the test labels without copying them
    "ids written as floats": lambda a: a.assign(id=a["id"].astype(float)),
    "class codes": _species_codes,
    "upper-cased classes": lambda a: a.assign(species=a["species"].str.upper()),
    "rows shuffled, id renamed": lambda a: a.sample(frac=1.0, random_state=1).rename(columns={"id": "row"}),
}


@pytest.mark.parametrize("form", list(LABEL_FORMS))
def test_the_leak_check_sees_labels_in_another_form(template_library, tmp_path, form):
    task = next(t for t in list_tasks(template_library) if t.meta.target == "species")
    workspace = tmp_path / "ws"
    shutil.copytree(task.workspace, workspace)
    answers = pd.read_csv(task.private / "answers.csv")
    LABEL_FORMS[form](answers).rename(columns={"species": "hint"}).to_csv(
        workspace / "notes.csv", index=False
    )
    assert any("notes.csv column 'hint'" in leak for leak in find_label_leaks(workspace, task.private))


def test_long_ids_stay_distinct_when_the_leak_check_joins_on_them(tmp_path):
    private, workspace = tmp_path / "private", tmp_path / "ws"
    private.mkdir()
    workspace.mkdir()
    ids = [1234567890 + i for i in range(40)]  # ten digits: a float format would merge them
    labels = ["cat", "dog", "bird", "fish"] * 10
    pd.DataFrame({"id": ids, "label": labels}).to_csv(private / "answers.csv", index=False)
    shuffled = pd.DataFrame({"id": ids, "hint": labels}).sample(frac=1.0, random_state=0)
    shuffled.to_csv(workspace / "notes.csv", index=False)
    assert any("notes.csv column 'hint'" in leak for leak in find_label_leaks(workspace, private))


def test_a_rescaled_copy_of_a_regression_label_is_a_leak(template_library, tmp_path):
    task = next(t for t in list_tasks(template_library) if t.meta.task_type == "regression")
    workspace = tmp_path / "ws"
    shutil.copytree(task.workspace, workspace)
    answers = pd.read_csv(task.private / "answers.csv")
    label = answers.columns[1]
    answers.assign(**{label: answers[label] * 1.8 + 32}).to_csv(
        workspace / "notes.csv", index=False
    )  # new units
    assert any(f"notes.csv column {label!r}" in leak for leak in find_label_leaks(workspace, task.private))


def _split_sorted_table(folder: Path, label: pd.Series, numbered_before_shuffle: bool) -> tuple[Path, Path]:
    """A task folder's ``workspace``/``private`` over a table sorted by its label: ids numbered
    before the rows were shuffled (a common build bug) or after."""
    table = pd.DataFrame({"x": range(len(label)), "label": label})  # x: a harmless feature
    if numbered_before_shuffle:
        table.insert(0, "id", range(len(table)))
    table = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    if not numbered_before_shuffle:
        table.insert(0, "id", range(len(table)))
    table["x"] = table["x"].sample(frac=1.0, random_state=1).to_numpy()
    test, train = table.iloc[: len(table) // 4], table.iloc[len(table) // 4 :]
    workspace, private = folder / "workspace", folder / "private"
    (workspace / "data").mkdir(parents=True)
    private.mkdir()
    train.to_csv(workspace / "data" / "train.csv", index=False)
    test.drop(columns=["label"]).to_csv(workspace / "data" / "test.csv", index=False)
    test[["id", "label"]].to_csv(private / "answers.csv", index=False)
    return workspace, private


SORTED_LABELS = {
    "classes": pd.Series(["ant"] * 200 + ["bee"] * 200 + ["cat"] * 200),
    "numbers": pd.Series([round(0.37 * i, 2) for i in range(600)]),
}


@pytest.mark.parametrize("kind", list(SORTED_LABELS))
def test_ids_numbered_in_label_order_are_a_leak_and_shuffled_ids_are_not(tmp_path, kind):
    workspace, private = _split_sorted_table(tmp_path / "leaky", SORTED_LABELS[kind], True)
    leaks = find_label_leaks(workspace, private)
    assert any("data/train.csv column 'id' gives private/answers.csv column 'label' away" in x for x in leaks)
    workspace, private = _split_sorted_table(tmp_path / "fine", SORTED_LABELS[kind], False)
    assert find_label_leaks(workspace, private) == []


# -- LLM tasks: the self-debug loop -----------------------------------------------------------------


def _llm_run(tmp_path: Path, records: list[VerifiedDataset], server, **validate):
    cfg = root_config(tmp_path, kind="llm", llm=fake_llm(server.base_url), **validate)
    generate, val = run_stages(tmp_path, cfg, records[:1])
    return generate, val


def test_a_broken_evaluate_py_is_fixed_on_the_second_round(tmp_path, records, openai_server):
    openai_server.push(
        task_answer(EVALUATE_CRASH),
        fix_answer(evaluate_py=EVALUATE_CHATTY),  # round 1: runs, but prints a second line
        fix_answer(evaluate_py=EVALUATE),  # round 2: correct
    )
    generate, validate = _llm_run(tmp_path, records, openai_server, max_rounds=3)
    [task] = list_tasks(validate.out_dir)
    history = task.meta.self_debug_history
    assert [h.step for h in history] == ["evaluate", "gate:json_output", "ok"]
    assert history[1].fixed_files == ["workspace/evaluate.py"] and history[1].prompt_tokens > 0
    assert (task.workspace / "evaluate.py").read_text() == EVALUATE
    assert task.meta.id_column == "row_id", "read from the answers the build wrote"
    assert 0.4 < task.meta.baseline_score < 0.9
    assert check_task_folder(task.path) == []
    fix_prompt = openai_server.chat_requests[1].messages[0]["content"]
    assert "species_predd" in fix_prompt, "the error output goes back to the model"
    assert "step: evaluate" in fix_prompt and EVALUATE_CRASH.strip() in fix_prompt
    assert (
        validate.report.items_out == 1
        and validate.report.completion_tokens > 0
        and validate.report.cost_usd > 0
    )
    generated = load_task(next((generate.out_dir / "tasks").iterdir())).meta.tokens
    assert task.meta.tokens > generated, "fix tokens are added to the task's cost"


def test_a_task_still_broken_after_max_rounds_is_discarded_with_the_reason(tmp_path, records, openai_server):
    openai_server.push(task_answer(EVALUATE_CRASH), fix_answer(evaluate_py=EVALUATE_CRASH), "no idea, sorry")
    _, validate = _llm_run(tmp_path, records, openai_server, max_rounds=2)
    assert list_tasks(validate.out_dir) == []
    [row] = _rejected(validate.out_dir).values()
    assert row["reason"] == "evaluate" and row["fix_rounds"] == 2
    assert [(h["step"], h["reason"]) for h in row["history"]] == [
        ("evaluate", ""),
        ("evaluate", ""),
        ("fix", "malformed_output"),
    ]
    assert "species_predd" in row["message"]
    assert len(openai_server.chat_requests) == 3
    assert dict(validate.report.drops) == {"evaluate": 1}


def test_an_exploit_prone_task_is_rejected_by_the_probes(tmp_path, records, openai_server):
    openai_server.push(task_answer(EVALUATE_EXPLOITABLE))
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [row] = _rejected(validate.out_dir).values()
    assert row["reason"] == "gate:exploit_probes"
    assert "sample_submission probe" in row["message"] and "better than the baseline" in row["message"]


def test_an_evaluator_ignoring_the_public_split_is_sent_back_and_the_build_draws_the_public_ids(
    tmp_path, records, openai_server
):
    openai_server.push(task_answer(EVALUATE_NO_SPLIT), fix_answer(evaluate_py=EVALUATE))
    _, validate = _llm_run(tmp_path, records, openai_server, max_rounds=1)
    assert "STSC_SCORE_SPLIT" in openai_server.chat_requests[0].messages[0]["content"]  # the contract asks
    [task] = list_tasks(validate.out_dir)
    assert [h.step for h in task.meta.self_debug_history] == ["gate:public_split", "ok"]
    fix_prompt = openai_server.chat_requests[1].messages[0]["content"]
    assert "does not honour the public split" in fix_prompt and "STSC_SCORE_SPLIT=validate" in fix_prompt
    answers = pd.read_csv(task.private / "answers.csv")
    public = pd.read_csv(task.private / "public_ids.csv")
    assert list(public.columns) == ["row_id"] and set(public["row_id"]) < set(answers["row_id"])
    assert len(public) == round(0.3 * len(answers))
    assert task.meta.public_split and task.meta.public_fraction == 0.3
    assert set(task.meta.public_baseline_scores) == {"accuracy"}


def test_the_split_check_matches_ids_however_the_baseline_formats_them(tmp_path, records, openai_server):
    float_ids = BASELINE.replace('{"row_id": test["row_id"],', '{"row_id": test["row_id"].astype(float),')
    assert float_ids != BASELINE
    openai_server.push(
        task_answer(files={"prepare.py": PREPARE, "baseline.py": float_ids, "evaluate.py": EVALUATE})
    )
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [task] = list_tasks(validate.out_dir)  # 3.0 in submission.csv is the id 3 of public_ids.csv
    assert [h.step for h in task.meta.self_debug_history] == ["ok"] and task.meta.public_split


def test_a_build_that_plants_a_link_is_rejected_without_the_host_reading_it(tmp_path, records, openai_server):
    secret = tmp_path / "host_only.txt"
    secret.write_text("HOST-ONLY-SECRET")
    planted = PREPARE + f'os.symlink({str(secret)!r}, "private/notes.txt")\n'
    openai_server.push(
        task_answer(files={"prepare.py": planted, "baseline.py": BASELINE, "evaluate.py": EVALUATE})
    )
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [row] = _rejected(validate.out_dir).values()
    assert row["reason"] == "prepare" and "symbolic links" in row["message"] and "notes.txt" in row["message"]
    assert "HOST-ONLY-SECRET" not in json.dumps(row)


def test_without_a_public_fraction_the_evaluator_scores_every_test_row(tmp_path, records, openai_server):
    openai_server.push(task_answer(EVALUATE_NO_SPLIT))
    cfg = root_config(tmp_path, kind="llm", llm=fake_llm(openai_server.base_url), self_debug=False)
    cfg.generator.public_fraction = 0.0
    _, validate = run_stages(tmp_path, cfg, records[:1])
    [task] = list_tasks(validate.out_dir)
    assert "STSC_SCORE_SPLIT" not in openai_server.chat_requests[0].messages[0]["content"]
    assert not task.meta.public_split and not (task.private / "public_ids.csv").exists()
    assert task.meta.public_baseline_scores == {}


def test_a_failing_data_build_is_fixed_too(tmp_path, records, openai_server):
    broken = PREPARE.replace('os.makedirs("private", exist_ok=True)\n', "")
    files = {"prepare.py": broken, "baseline.py": BASELINE, "evaluate.py": EVALUATE}
    openai_server.push(task_answer(files=files), fix_answer(prepare_py=PREPARE))
    _, validate = _llm_run(tmp_path, records, openai_server, max_rounds=1)
    [task] = list_tasks(validate.out_dir)
    assert [h.step for h in task.meta.self_debug_history] == ["prepare", "ok"]
    assert (task.private / "answers.csv").is_file() and not (task.workspace / "answers.csv").exists()


def test_without_self_debug_a_failure_is_final(tmp_path, records, openai_server):
    openai_server.push(task_answer(EVALUATE_CRASH))
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [row] = _rejected(validate.out_dir).values()
    assert row["fix_rounds"] == 0 and "validate.self_debug=false" in row["history"][0]["skipped"]
    assert len(openai_server.chat_requests) == 1


@pytest.mark.slow
def test_the_offline_catalog_yields_a_library_of_20_tasks_from_8_datasets(tmp_path):
    from stsc.hub.catalog import Catalog
    from stsc.hub.records import Decision

    metas = Catalog(tmp_path / "catalog").export()
    records = [
        VerifiedDataset(
            proposal_id=f"p{i}", topic_id=f"t{i}", requested_id=m.id, dataset_id=m.id, revision=m.revision,
            license=m.license, n_rows=m.n_rows, columns=m.columns, source="offline", local_path=m.local_path,
            description=m.description, targets=m.targets, decision=Decision.ACCEPTED, reason="ok",
        )
        for i, m in enumerate(metas)
    ]  # fmt: skip
    cfg = root_config(tmp_path)
    cfg.generator.tasks_per_dataset = 3
    _, validate = run_stages(tmp_path, cfg, records)
    tasks = list_tasks(validate.out_dir)
    assert len(tasks) >= 20 and len({t.meta.dataset_id for t in tasks}) >= 8
    assert all(check_task_folder(t.path) == [] for t in tasks)


def test_a_resumed_run_keeps_the_fix_budget_spent_before_it(tmp_path, records, openai_server):
    iris, _ = records
    twin = make_record("other/iris", pd.read_parquet(iris.local_path), iris.targets, tmp_path / "tables", 1)
    openai_server.push(
        task_answer(EVALUATE_CRASH), task_answer(EVALUATE_CRASH),
        fix_answer(evaluate_py=EVALUATE), fix_answer(evaluate_py=EVALUATE),
    )  # fmt: skip
    cfg = root_config(tmp_path, kind="llm", llm=fake_llm(openai_server.base_url), max_rounds=1)
    generate = make_ctx(tmp_path, "generate", {"verify": write_verify_output(tmp_path, [iris, twin])})
    run_generate(cfg, generate)
    first_draft, second_draft = sorted((generate.out_dir / "tasks").iterdir())
    parked = shutil.move(second_draft, tmp_path / second_draft.name)  # not generated yet when killed
    cfg.generator.llm.budget_usd = 1e-9  # the first fix call spends it
    first = make_ctx(tmp_path, "validate", {"generate": generate.out_dir})
    run_validate(cfg, first)
    assert first.report.items_out == 1 and len(openai_server.chat_requests) == 3
    assert first.report.cost_usd > 0

    shutil.move(parked, second_draft)
    again = make_ctx(tmp_path, "validate", {"generate": generate.out_dir})  # a rerun of the same folder
    run_validate(cfg, again)
    assert len(openai_server.chat_requests) == 3, "the fix budget spent before the rerun still counts"
    row = _rejected(again.out_dir)[second_draft.name]
    assert row["reason"] == "evaluate" and row["history"][-1]["reason"] == "llm_error"
    assert "budget" in row["history"][-1]["message"]
    assert again.report.items_out == 1 and dict(again.report.drops) == {"evaluate": 1}
    assert again.report.cost_usd == pytest.approx(first.report.cost_usd)
    assert first_draft.name in {t.task_id for t in list_tasks(again.out_dir)}


def test_an_evaluator_pairing_predictions_with_labels_by_position_is_rejected(
    tmp_path, records, openai_server
):
    # a correct submission in another row order scores as wrong; the split is honoured by position too
    positional = EVALUATE.replace(
        'truth = truth[truth["row_id"].isin(public) == validate]',
        'keep = (truth["row_id"].isin(public) == validate).to_numpy(); truth, sub = truth[keep], sub[keep]',
    ).replace(
        'merged = truth.merge(sub, on="row_id", suffixes=("", "_pred"))',
        'merged = truth.assign(species_pred=sub["species"].to_numpy())',
    )
    assert positional.count("keep") == 3 and "assign" in positional
    openai_server.push(task_answer(positional))
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [row] = _rejected(validate.out_dir).values()
    assert row["reason"] == "gate:exploit_probes"
    assert "rows in reverse order scored accuracy=" in row["message"] and "by the id column" in row["message"]


def test_an_evaluator_whose_score_ignores_the_predictions_is_rejected(tmp_path, records, openai_server):
    blind = EVALUATE.replace(
        'print(json.dumps({"accuracy": float((merged["species"] == merged["species_pred"]).mean())}))',
        'print(json.dumps({"accuracy": 0.5}))',
    )
    assert blind != EVALUATE
    openai_server.push(task_answer(blind))
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [row] = _rejected(validate.out_dir).values()
    assert row["reason"] == "gate:exploit_probes"
    assert "the same accuracy=0.5: its score does not depend on the predictions" in row["message"]


def test_an_evaluator_checking_only_the_row_count_is_rejected_by_the_probes(tmp_path, records, openai_server):
    # the same number of rows, but some ids twice and others missing: a submission can keep its
    # confident rows and drop the rest
    count_only = EVALUATE.replace(
        'sorted(sub["row_id"]) != sorted(truth["row_id"])', "len(sub) != len(truth)"
    )
    assert count_only != EVALUATE
    openai_server.push(task_answer(count_only))
    _, validate = _llm_run(tmp_path, records, openai_server, self_debug=False)
    [row] = _rejected(validate.out_dir).values()
    assert row["reason"] == "gate:exploit_probes"
    assert "repeats" in row["message"] and "must exit non-zero" in row["message"]


# -- probes on copies of template tasks -------------------------------------------------------------


def _task_copy(template_library: Path, tmp_path: Path, task_id: str) -> Path:
    folder = tmp_path / task_id
    shutil.copytree(template_library / "library" / task_id, folder)
    return folder


def _check(folder: Path, tmp_path: Path, **validate) -> CheckResult:
    cfg = root_config(tmp_path, **validate)
    return check_task(folder, cfg.validate, make_factory(cfg.sandbox), "test")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new))


# the template evaluator with its score replaced by a constant
BLIND_SCORE = ('print(json.dumps({SPEC["metric"]: score}))', 'print(json.dumps({SPEC["metric"]: 0.5}))')


@pytest.mark.parametrize("answers_first", ["id", "species"])
def test_the_probes_find_the_id_column_where_the_task_declares_it(template_library, tmp_path, answers_first):
    # the submissions hold the label first; answers.csv holds the id first, as the task contract
    # has it, or the label first too, when meta.json's id_column names the ids
    folder = _task_copy(template_library, tmp_path, "sklearn-iris-species-accuracy")
    for rel in ("workspace/sample_submission.csv", "private/answers.csv"):
        frame = pd.read_csv(folder / rel)
        first = answers_first if rel.startswith("private") else "species"
        frame[[first, *(c for c in frame.columns if c != first)]].to_csv(folder / rel, index=False)
    _edit(folder / "workspace" / "baseline.py", "submission.to_csv(", 'submission[["species", "id"]].to_csv(')
    assert _check(folder, tmp_path).failure is None
    _edit(folder / "workspace" / "evaluate.py", *BLIND_SCORE)
    failure = _check(folder, tmp_path).failure
    assert failure is not None and failure.step == "gate:exploit_probes"
    assert "does not depend on the predictions" in failure.message


# the template evaluator without its check that every prediction is a class (a blank is none)
ANY_VALUE = ("        refuse_unknown_classes(submitted, truth)\n", "        pass\n")
# the template evaluator scoring only the rows with a prediction; a stricter one refuses predictions
# that are not classes in those rows
SCORED_ROWS = "    keys = scored_ids(private_dir, list(truth))\n"
DROP_BLANKS = "    keys = [k for k in scored_ids(private_dir, list(truth)) if submitted[k].strip()]\n"
KNOWN_CLASSES = (
    "    if {label(submitted[k]) for k in keys} - {label(v) for v in truth.values()}:\n"
    '        fail("a prediction is not one of the classes")\n'
)
DROPPING = {
    "classes": ("sklearn-iris-species-macro-f1", [ANY_VALUE, (SCORED_ROWS, DROP_BLANKS)]),
    "numbers, lower is better": ("sklearn-diabetes-progression-rmse", [(SCORED_ROWS, DROP_BLANKS)]),
    "known classes only": (
        "sklearn-iris-species-accuracy",
        [ANY_VALUE, (SCORED_ROWS, DROP_BLANKS + KNOWN_CLASSES)],
    ),
}


@pytest.mark.parametrize("kind", list(DROPPING))
def test_an_evaluator_scoring_only_the_rows_with_a_prediction_is_rejected(template_library, tmp_path, kind):
    task_id, edits = DROPPING[kind]
    folder = _task_copy(template_library, tmp_path, task_id)
    for old, new in edits:
        _edit(folder / "workspace" / "evaluate.py", old, new)
    result = _check(folder, tmp_path)
    assert result.failure is not None and result.failure.step == "gate:exploit_probes"
    assert "it drops blank predictions and scores only the rest" in result.failure.message
    # the rows kept hold the labels: scored alone they score like the labels in every row
    assert result.probes["blanked"] == result.probes["labels"]


# the template evaluator predicting the median label for a blank (a fallback of its own)
FALLBACK = (
    "[number(submitted[k], k) for k in keys]",
    "[number(submitted[k], k) if submitted[k].strip() else sorted(y_true)[len(y_true) // 2] for k in keys]",
)


def test_an_evaluator_scoring_a_blank_as_a_fallback_prediction_is_accepted(template_library, tmp_path):
    # for MAE the median beats the mean, the constant probe's prediction
    folder = _task_copy(template_library, tmp_path, "sklearn-diabetes-progression-mae")
    _edit(folder / "workspace" / "evaluate.py", *FALLBACK)
    result = _check(folder, tmp_path)
    assert result.failure is None, result.failure
    assert result.probes["labels"] < result.probes["blanked"] < result.baseline_score


def _amounts() -> pd.DataFrame:
    """Positive amounts growing exponentially with one feature, with multiplicative noise (like
    prices or counts): a shallow tree predicts the many small amounts closely and the few large
    ones badly."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    amount = np.exp(1.5 * x[:, 0]) * (1 + 0.3 * rng.normal(size=300))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "amount": amount})


def test_an_r2_evaluator_scoring_only_the_rows_with_a_prediction_is_rejected(tmp_path):
    # R^2 of the rows a weak baseline predicts best can be below its R^2 on every row: those rows
    # can all have small amounts, whose spread is small too
    target = TargetSpec(column="amount", task_type=TaskType.REGRESSION)
    record = make_record("synthetic/amounts", _amounts(), [target], tmp_path / "tables")
    generate = make_ctx(tmp_path, "generate", {"verify": write_verify_output(tmp_path, [record])})
    cfg = root_config(tmp_path)
    cfg.generator.tasks_per_dataset = 3
    run_generate(cfg, generate)
    folder = generate.out_dir / "tasks" / "synthetic-amounts-amount-r2"
    assert _check(folder, tmp_path).failure is None, "the template R^2 evaluator is sound"
    _edit(folder / "workspace" / "evaluate.py", SCORED_ROWS, DROP_BLANKS)
    result = _check(folder, tmp_path)
    assert result.failure is not None and result.failure.step == "gate:exploit_probes", result.probes
    assert "it drops blank predictions and scores only the rest" in result.failure.message


def test_blank_predictions_scoring_above_the_baseline_as_a_wrong_class_are_not_taken_for_dropped_ones(
    tmp_path,
):
    # macro-F1 over ten digits, a depth-1 baseline predicting two of them, and an evaluator taking a
    # blank for one more (wrong) class; with the labels in a quarter of the rows, that scores far
    # above the baseline
    from sklearn.datasets import load_digits

    frame = load_digits(as_frame=True).frame.rename(columns={"target": "digit"})
    target = TargetSpec(column="digit", task_type=TaskType.CLASSIFICATION, n_classes=10)
    record = make_record("sklearn/digits", frame, [target], tmp_path / "tables")
    generate = make_ctx(tmp_path, "generate", {"verify": write_verify_output(tmp_path, [record])})
    run_generate(root_config(tmp_path), generate)
    folder = generate.out_dir / "tasks" / "sklearn-digits-digit-macro-f1"
    stock = _check(folder, tmp_path)
    assert stock.failure is None and stock.probes["blanked"] == "rejected", "the template refuses a blank"
    _edit(folder / "workspace" / "evaluate.py", *ANY_VALUE)
    result = _check(folder, tmp_path)
    assert result.failure is None, result.failure
    probes = result.probes
    assert result.baseline_score < probes["blanked"] < probes["labels"] == 1.0


# scores two label columns of an iris task (species and setosa-or-not); a blank cell is a wrong answer
EVALUATE_TWO_COLUMNS = textwrap.dedent(
    """\
    import argparse, csv, json, os, sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--submission_file", default="submission.csv")
    args = parser.parse_args()
    private = os.environ.get("STSC_PRIVATE_DIR")
    if not private:
        sys.exit("STSC_PRIVATE_DIR is not set")
    read = lambda path: list(csv.DictReader(open(path)))
    truth = {row["id"]: row for row in read(os.path.join(private, "answers.csv"))}
    submitted = read(args.submission_file)
    if sorted(row["id"] for row in submitted) != sorted(truth):
        sys.exit("submission must have one row per test id")
    sub = {row["id"]: row for row in submitted}
    public = {row["id"] for row in read(os.path.join(private, "public_ids.csv"))}
    validate = os.environ.get("STSC_SCORE_SPLIT", "submit") == "validate"
    rows = [k for k in truth if (k in public) == validate]
    hits = [truth[k][c] == sub[k][c] for k in rows for c in ("species", "setosa")]
    print(json.dumps({"accuracy": sum(hits) / len(hits)}))
    """
)


def test_a_task_with_two_prediction_columns_is_probed_on_both(template_library, tmp_path):
    folder = _task_copy(template_library, tmp_path, "sklearn-iris-species-accuracy")
    answers = pd.read_csv(folder / "private" / "answers.csv")
    answers.assign(setosa=answers["species"] == "setosa").to_csv(
        folder / "private" / "answers.csv", index=False
    )
    sample = folder / "workspace" / "sample_submission.csv"
    pd.read_csv(sample).assign(setosa=False).to_csv(sample, index=False)
    _edit(
        folder / "workspace" / "baseline.py",
        "submission.to_csv(",
        'submission.assign(setosa=submission["species"] == "setosa").to_csv(',
    )
    (folder / "workspace" / "evaluate.py").write_text(EVALUATE_TWO_COLUMNS)
    assert _check(folder, tmp_path).failure is None
    _edit(folder / "workspace" / "evaluate.py", '"setosa")]', '"setosa") if sub[k][c]]')  # blanks skipped
    failure = _check(folder, tmp_path).failure
    assert failure is not None and "it drops blank predictions" in failure.message
