"""generator=llm through real litellm against the loopback model server, and the generate stage."""

from __future__ import annotations

import pytest

from stsc.errors import ModelOutputError
from stsc.hub.records import Proposal
from stsc.store import iter_jsonl, write_jsonl
from stsc.synth.generate import run_generate
from stsc.synth.llm_generator import parse_fix, parse_generated_task
from stsc.synth.task import check_task_folder, load_task
from tests.synth.conftest import (
    BASELINE,
    EVALUATE,
    PREPARE,
    fake_llm,
    make_ctx,
    root_config,
    task_answer,
    write_verify_output,
)


def test_a_generation_answer_parses_into_the_task_fields():
    spec = parse_generated_task(task_answer())
    assert spec.metric == "accuracy" and spec.higher_is_better is True
    assert spec.files == {"prepare.py": PREPARE, "baseline.py": BASELINE, "evaluate.py": EVALUATE}
    bare = parse_generated_task(task_answer().split("```json\n")[1].split("```")[0])
    assert bare == spec, "a bare JSON object is accepted too"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("I cannot do that.", "JSON"),
        ('{"name": "x"', "JSON"),
        (task_answer(files={"prepare.py": PREPARE, "baseline.py": BASELINE}), "evaluate.py"),
        (task_answer(description="Predict {label}.\nSUBMISSION FORMAT:\nid,label"), "braces"),
        (task_answer(description="Predict the label."), "SUBMISSION FORMAT"),
        (task_answer(higher_is_better="sometimes"), "higher_is_better"),
    ],
)
def test_malformed_generation_answers_are_refused_with_the_reason(answer, message):
    with pytest.raises(ModelOutputError, match=message):
        parse_generated_task(answer)


def test_fix_answers_may_only_touch_the_task_files():
    assert parse_fix('{"files": {"evaluate.py": "print(1)"}}') == {"evaluate.py": "print(1)"}
    with pytest.raises(ModelOutputError, match="unknown"):
        parse_fix('{"files": {"run.sh": "rm -rf /"}}')
    with pytest.raises(ModelOutputError):
        parse_fix('{"evaluate.py": "print(1)"}')


def _proposals(tmp_path, records):
    folder = tmp_path / "store" / "propose" / "pkey"
    rows = [
        Proposal(
            id=r.proposal_id, topic_id=r.topic_id, topic_title="Plant morphology", area="biology",
            task_idea="Classify flowers from measurements", dataset_candidates=[r.dataset_id],
            target="species", metric="accuracy", higher_is_better=True, source="catalog",
        ).model_dump(mode="json")
        for r in records
    ]  # fmt: skip
    write_jsonl(folder / "proposals.jsonl", rows)
    return folder


def _stage(tmp_path, records, openai_server):
    cfg = root_config(tmp_path, kind="llm", llm=fake_llm(openai_server.base_url))
    verify = write_verify_output(tmp_path, records)
    propose = _proposals(tmp_path, records)
    ctx = make_ctx(tmp_path, "generate", {"verify": verify, "propose": propose})
    return cfg, ctx


def test_the_model_writes_a_draft_with_its_build_script_and_usage(tmp_path, records, openai_server):
    openai_server.push(task_answer())
    cfg, ctx = _stage(tmp_path, records[:1], openai_server)
    run_generate(cfg, ctx)
    [folder] = [p for p in (ctx.out_dir / "tasks").iterdir()]
    assert check_task_folder(folder, require_data=False, require_score=False) == []
    task = load_task(folder)
    assert (folder / "build" / "prepare.py").read_text() == PREPARE
    assert (folder / "build" / "raw" / "data.csv").read_text().startswith("sepal_length")
    assert task.meta.generator == "llm:openai/fake-model"
    assert task.meta.topic_title == "Plant morphology", "topic read from the proposals behind verify"
    assert task.meta.tokens > 0 and task.meta.cost_usd > 0
    prompt = openai_server.chat_requests[0].messages[0]["content"]
    assert "sklearn/iris" in prompt and "petal_length" in prompt and "Classify flowers" in prompt
    assert ctx.report.items_out == 1 and ctx.report.prompt_tokens > 0 and ctx.report.cost_usd > 0


def test_malformed_model_output_is_a_recorded_drop(tmp_path, records, openai_server):
    openai_server.push("Sure! The task is about iris flowers.", task_answer())
    cfg, ctx = _stage(tmp_path, records, openai_server)
    cfg.generator.llm.concurrency = 1
    run_generate(cfg, ctx)
    rows = list(iter_jsonl(ctx.out_dir / "generated.jsonl"))
    dropped = [r for r in rows if not r["task_ids"]]
    assert len(rows) == 2 and len(dropped) == 1
    assert dropped[0]["drops"][0]["reason"] == "malformed_output"
    assert dropped[0]["prompt_tokens"] > 0, "the failed call's usage is still counted"
    assert ctx.report.drops["malformed_output"] == 1 and ctx.report.items_out == 1


def test_a_rerun_skips_items_already_generated(tmp_path, records, openai_server):
    openai_server.push(task_answer())
    cfg, ctx = _stage(tmp_path, records[:1], openai_server)
    run_generate(cfg, ctx)
    calls = len(openai_server.chat_requests)
    again = make_ctx(tmp_path, "generate", ctx.inputs)
    run_generate(cfg, again)
    assert len(openai_server.chat_requests) == calls
    assert again.report.items_in == 1 and again.report.items_out == 1


def test_columns_of_lists_or_mappings_stay_out_of_the_prompt_and_the_raw_table(tmp_path, openai_server):
    from tests.synth.conftest import TABLES, make_record

    load, targets = TABLES["sklearn/iris"]
    frame = load().assign(tokens=[["petal", str(i)] for i in range(150)])  # a Hub Sequence feature
    record = make_record("sklearn/iris", frame, targets, tmp_path / "tables")
    openai_server.push(task_answer())
    cfg, ctx = _stage(tmp_path, [record], openai_server)
    run_generate(cfg, ctx)
    [folder] = list((ctx.out_dir / "tasks").iterdir())
    header = (folder / "build" / "raw" / "data.csv").read_text().splitlines()[0]
    assert header == "sepal_length,sepal_width,petal_length,petal_width,species"
    assert "tokens" not in openai_server.chat_requests[0].messages[0]["content"]


def test_a_resumed_run_keeps_the_budget_spent_before_it(tmp_path, records, openai_server):
    openai_server.push(task_answer(), task_answer())
    cfg, ctx = _stage(tmp_path, records[:1], openai_server)
    cfg.generator.llm.budget_usd = 1e-9  # the first call spends it
    run_generate(cfg, ctx)
    assert ctx.report.items_out == 1 and len(openai_server.chat_requests) == 1
    # The run was stopped before the second dataset's turn came; the rerun finds it.
    write_verify_output(tmp_path, records)
    again = make_ctx(tmp_path, "generate", ctx.inputs)
    run_generate(cfg, again)
    assert len(openai_server.chat_requests) == 1, "the budget spent before the rerun still counts"
    assert dict(again.report.drops) == {"budget_exceeded": 1} and again.report.items_out == 1
