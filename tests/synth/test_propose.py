"""The propose stage: deterministic catalog matching, and model proposals validated as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stsc.config import LLMConfig, RootConfig
from stsc.hub import load_frame
from stsc.hub.records import Decision, Proposal, Topic, VerifiedDataset
from stsc.hub.verify import DATASETS_FILE, run_verify
from stsc.store import iter_jsonl, read_json, write_jsonl
from stsc.synth.propose import PROPOSALS_FILE, ProposalDraft, extract_json, parse_reply, run_propose
from stsc.synth.topics import make_topic, run_topics
from tests.fakes.openai_server import FakeOpenAIServer
from tests.hub.stages import compose_config, make_ctx

TOPICS = [
    make_topic(
        "tabular", "Wine cultivar recognition from chemical analysis", "Tell cultivars apart.", "curated"
    ),
    make_topic(
        "tabular",
        "Body mass of penguins from flipper and bill measurements",
        "Estimate body mass.",
        "curated",
    ),
    make_topic("audio", "Spoken keyword spotting", "Recognise spoken command words.", "curated"),
]


def _topics_dir(tmp_path: Path, topics: list[Topic] = TOPICS) -> Path:
    folder = tmp_path / "topics"
    write_jsonl(folder / "topics.jsonl", [t.model_dump(mode="json") for t in topics])
    return folder


def _run(tmp_path: Path, cfg: RootConfig, topics_dir: Path, name: str = "propose", seed: int = 0):
    ctx = make_ctx(tmp_path, name, inputs={"topics": topics_dir}, seed=seed)
    run_propose(cfg, ctx)
    return ctx, [Proposal.model_validate(r) for r in iter_jsonl(ctx.out_dir / PROPOSALS_FILE)]


def _catalog_cfg(tmp_path: Path) -> RootConfig:
    cfg = RootConfig()
    cfg.hub.catalog_dir = str(tmp_path / "catalog")
    return cfg


def test_catalog_mode_matches_topics_to_datasets_and_targets(tmp_path: Path) -> None:
    ctx, proposals = _run(tmp_path, _catalog_cfg(tmp_path), _topics_dir(tmp_path))
    got = [(p.topic_id, p.dataset_candidates[0], p.target, p.metric, p.higher_is_better) for p in proposals]
    assert got == [
        (TOPICS[0].id, "sklearn/wine", "cultivar", "accuracy", True),
        (TOPICS[1].id, "palmerpenguins/penguins", "body_mass_g", "rmse", False),
    ]
    assert all(p.source == "catalog" and p.id == f"{p.topic_id}-p" for p in proposals)
    assert (ctx.report.items_in, ctx.report.items_out, dict(ctx.report.drops)) == (
        3,
        2,
        {"no_catalog_match": 1},
    )


def test_catalog_mode_is_deterministic(tmp_path: Path) -> None:
    cfg = compose_config([f"hub.catalog_dir={tmp_path / 'catalog'}"])
    topics_ctx = make_ctx(tmp_path, "topics")
    run_topics(cfg, topics_ctx)
    a, _ = _run(tmp_path, cfg, topics_ctx.out_dir, name="a")
    b, _ = _run(tmp_path, cfg, topics_ctx.out_dir, name="b")
    assert (a.out_dir / PROPOSALS_FILE).read_bytes() == (b.out_dir / PROPOSALS_FILE).read_bytes()


def test_default_recipe_yields_at_least_eight_distinct_usable_datasets(tmp_path: Path) -> None:
    cfg = compose_config([f"hub.catalog_dir={tmp_path / 'catalog'}"])
    topics_ctx = make_ctx(tmp_path, "topics")
    run_topics(cfg, topics_ctx)
    propose_ctx, proposals = _run(tmp_path, cfg, topics_ctx.out_dir)
    verify_ctx = make_ctx(tmp_path, "verify", inputs={"propose": propose_ctx.out_dir})
    run_verify(cfg, verify_ctx)
    rows = [VerifiedDataset.model_validate(r) for r in iter_jsonl(verify_ctx.out_dir / DATASETS_FILE)]
    accepted = {r.dataset_id: r for r in rows if r.decision is Decision.ACCEPTED}
    assert len(proposals) >= 20 and len(accepted) >= 8
    for record in accepted.values():
        frame = load_frame(record)
        assert record.targets and record.targets[0].column in frame.columns and len(frame) >= 100


# -- llm mode ------------------------------------------------------------------------------------

VALID = {
    "task_idea": "Predict the cultivar of wines from their chemical analysis.",
    "dataset_candidates": ["acme/wine", "uci/wine", "other/wine", "fourth/wine"],
    "target": "cultivar",
    "metric": "accuracy",
    "higher_is_better": True,
}


def _llm_cfg(tmp_path: Path, server: FakeOpenAIServer, hub_kind: str = "huggingface") -> RootConfig:
    cfg = _catalog_cfg(tmp_path)
    cfg.hub.kind = hub_kind
    cfg.propose.kind = "llm"
    cfg.propose.max_attempts = 3
    cfg.propose.llm = LLMConfig(
        model="openai/fake-model", api_base=server.base_url, max_retries=0, timeout_s=10, max_tokens=256,
        input_cost_per_token=1e-6, output_cost_per_token=2e-6,
    )  # fmt: skip
    return cfg


def test_llm_mode_reasks_malformed_output_then_drops_the_topic_with_its_reason(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.push(
        "I think the wine dataset is best.",  # topic 0: not JSON
        json.dumps({"task_idea": "short"}),  # topic 0: JSON of the wrong shape
        "Here it is:\n```json\n" + json.dumps(VALID) + "\n```",  # topic 0: accepted
        "no", "still no", "{broken json",  # topic 1: three failures -> dropped
    )  # fmt: skip
    cfg = _llm_cfg(tmp_path, openai_server)
    ctx, proposals = _run(tmp_path, cfg, _topics_dir(tmp_path, TOPICS[:2]))
    assert [p.topic_id for p in proposals] == [TOPICS[0].id]
    assert proposals[0].dataset_candidates == ["acme/wine", "uci/wine", "other/wine"]  # max_candidates
    assert proposals[0].source == "llm:openai/fake-model" and proposals[0].target == "cultivar"
    assert dict(ctx.report.drops) == {"malformed_output": 1} and ctx.report.items_out == 1
    assert ctx.report.prompt_tokens > 0 and ctx.report.cost_usd > 0

    requests = openai_server.chat_requests
    assert len(requests) == 6
    assert "no valid JSON" in requests[1].messages[-1]["content"]
    assert "does not match the schema" in requests[2].messages[-1]["content"]

    dropped = read_json(ctx.out_dir / "items" / f"{TOPICS[1].id}.json")
    assert dropped["status"] == "dropped" and dropped["reason"] == "malformed_output"
    assert len(dropped["errors"]) == 3 and len(dropped["prompts"]) == 3
    assert all(p["prompt"] == "propose" and len(p["sha256"]) == 64 for p in dropped["prompts"])


def test_llm_mode_resumes_without_asking_again(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.push(json.dumps(VALID), json.dumps(VALID))
    cfg = _llm_cfg(tmp_path, openai_server)
    topics = _topics_dir(tmp_path, TOPICS[:2])
    _, first = _run(tmp_path, cfg, topics)
    _, again = _run(tmp_path, cfg, topics)
    assert first == again and len(openai_server.chat_requests) == 2


def test_llm_mode_with_the_offline_hub_shows_the_catalog_in_the_prompt(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.push(json.dumps(VALID | {"dataset_candidates": ["sklearn/wine"]}))
    _, proposals = _run(
        tmp_path, _llm_cfg(tmp_path, openai_server, hub_kind="offline"), _topics_dir(tmp_path, TOPICS[:1])
    )
    prompt = openai_server.chat_requests[0].messages[-1]["content"]
    assert "sklearn/wine: Wine recognition" in prompt and "palmerpenguins/penguins" in prompt
    assert proposals[0].dataset_candidates == ["sklearn/wine"]


def test_a_missing_api_key_fails_before_any_call(tmp_path: Path, openai_server, monkeypatch) -> None:
    from stsc.errors import MissingAPIKeyError

    cfg = _llm_cfg(tmp_path, openai_server)
    cfg.propose.llm.api_key_env = "STSC_TEST_UNSET_KEY"
    monkeypatch.delenv("STSC_TEST_UNSET_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="STSC_TEST_UNSET_KEY"):
        _run(tmp_path, cfg, _topics_dir(tmp_path, TOPICS[:1]))
    assert openai_server.chat_requests == []


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(VALID),
        "```json\n" + json.dumps(VALID) + "\n```",
        "Sure, here you go: " + json.dumps(VALID) + " Hope this helps.",
    ],
)
def test_json_is_found_in_plain_fenced_or_chatty_replies(text: str) -> None:
    assert parse_reply(text, ProposalDraft).dataset_candidates == VALID["dataset_candidates"]


def test_schema_errors_name_the_offending_field() -> None:
    from stsc.errors import ModelOutputError

    with pytest.raises(ModelOutputError, match="dataset_candidates"):
        parse_reply(json.dumps(VALID | {"dataset_candidates": ["not a valid id!"]}), ProposalDraft)
    with pytest.raises(ModelOutputError, match="no valid JSON"):
        extract_json("nothing here")


@pytest.mark.parametrize(
    "reply",
    [
        '<think>the classes are {0, 1, 2}; maybe {"x": 1}?</think>\n{"a": 1}',  # inline reasoning
        'Here it is: {"a": 1}\nThe labels are {0, 1, 2}.',  # a note with braces after it
        '{"a": 1}\n{"b": 2}',  # a second object
        'Sure.\n```json\n{"a": 1}\n```',
    ],
)
def test_the_json_object_is_found_around_braces_in_other_text(reply: str) -> None:
    assert extract_json(reply) == {"a": 1}


def test_a_resumed_llm_run_keeps_the_budget_and_reports_the_spend_of_earlier_runs(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    openai_server.push(json.dumps(VALID), json.dumps(VALID))
    cfg = _llm_cfg(tmp_path, openai_server)
    cfg.propose.llm.budget_usd = 1e-9  # the first call spends it
    topics = _topics_dir(tmp_path, TOPICS[:2])
    first, proposals = _run(tmp_path, cfg, topics)
    assert len(proposals) == 1 and dict(first.report.drops) == {"budget_exceeded": 1}
    assert len(openai_server.chat_requests) == 1 and first.report.cost_usd > 0

    again, resumed = _run(tmp_path, cfg, topics)  # a rerun of the same stage folder
    assert len(openai_server.chat_requests) == 1, "the budget spent before the rerun still counts"
    assert resumed == proposals and dict(again.report.drops) == {"budget_exceeded": 1}
    assert (again.report.prompt_tokens, again.report.completion_tokens) == (
        first.report.prompt_tokens,
        first.report.completion_tokens,
    )
    assert again.report.cost_usd == pytest.approx(first.report.cost_usd)
