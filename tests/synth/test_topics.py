"""The topics stage: curated topics by area weight, deduplication, and model expansion."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

from stsc.config import LLMConfig, RootConfig, TopicsConfig, TopicSeed
from stsc.hub.records import Topic
from stsc.hub.text import jaccard
from stsc.store import iter_jsonl
from stsc.synth.topics import TOPICS_FILE, quotas, run_topics, title_words
from tests.fakes.openai_server import FakeOpenAIServer
from tests.hub.stages import compose_config, make_ctx


def _run(tmp_path: Path, cfg: RootConfig, seed: int = 0):
    ctx = make_ctx(tmp_path, "topics", seed=seed)
    run_topics(cfg, ctx)
    return ctx, [Topic.model_validate(r) for r in iter_jsonl(ctx.out_dir / TOPICS_FILE)]


def _words(title: str) -> set[str]:
    return title_words(title)


def test_curated_topics_fill_n_split_by_area_weights(tmp_path: Path) -> None:
    cfg = compose_config()
    ctx, topics = _run(tmp_path, cfg)
    assert len(topics) == cfg.topics.n == 40
    assert len({t.id for t in topics}) == 40 and all(t.source == "curated" for t in topics)
    counts = {a: sum(t.area == a for t in topics) for a in cfg.topics.areas}
    want = quotas(40, cfg.topics.areas)
    assert all(counts[a] <= len([s for s in cfg.topics.seeds if s.area == a]) for a in counts)
    assert sum(abs(counts[a] - want[a]) for a in counts) <= 2  # short areas are filled from others
    assert counts["tabular"] + counts["science"] >= 18
    assert ctx.report.items_out == 40 and ctx.report.drops["over_quota"] == len(cfg.topics.seeds) - 40


def test_topic_selection_is_deterministic_per_seed(tmp_path: Path) -> None:
    cfg = compose_config()
    _, first = _run(tmp_path / "a", cfg, seed=0)
    _, again = _run(tmp_path / "b", cfg, seed=0)
    assert first == again
    seeds_used = {frozenset(t.id for t in _run(tmp_path / f"s{s}", cfg, seed=s)[1]) for s in range(6)}
    assert len(seeds_used) > 1  # the run seed changes which curated topics are left out


def test_no_two_curated_topics_are_duplicates() -> None:
    cfg = compose_config()
    pairs = combinations([s.title for s in cfg.topics.seeds], 2)
    assert all(jaccard(_words(a), _words(b)) < cfg.topics.dedup_threshold for a, b in pairs)


def _seeded(tmp_path: Path, *seeds: tuple[str, str, str]):
    """Run the topics stage on curated ``(area, title, description)`` seeds only."""
    cfg = RootConfig()
    cfg.topics = TopicsConfig(n=10, seeds=[TopicSeed(*s) for s in seeds])
    return _run(tmp_path, cfg)


def test_near_duplicate_titles_are_dropped(tmp_path: Path) -> None:
    ctx, topics = _seeded(
        tmp_path,
        ("tabular", "Wine quality prediction", "Predict the quality score of wines."),
        ("tabular", "Predicting wine quality", "Estimate how tasters rate wines."),
        ("tabular", "Wine quality classification", "Classify wines by quality."),
        ("science", "Crop yield estimation", "Estimate crop yields from field data."),
    )
    assert [t.title for t in topics] == ["Wine quality prediction", "Crop yield estimation"]
    assert ctx.report.drops["duplicate"] == 2 and ctx.report.items_in == 4


def test_titles_naming_different_problems_are_not_duplicates(tmp_path: Path) -> None:
    ctx, topics = _seeded(
        tmp_path,
        ("vision", "Face detection", "Find the faces in photos."),
        ("vision", "Face recognition", "Tell whose face a photo shows."),
        ("vision", "Detecting faces", "Locate faces in images."),
        ("vision", "Recognizing faces", "Identify people from face crops."),
    )
    assert [t.title for t in topics] == ["Face detection", "Face recognition"]
    assert ctx.report.drops["duplicate"] == 2


def test_quotas_follow_weights_by_largest_remainder() -> None:
    assert quotas(10, {"a": 0.5, "b": 0.3, "c": 0.2}) == {"a": 5, "b": 3, "c": 2}
    assert quotas(4, {"a": 1, "b": 1, "c": 1}) == {"a": 2, "b": 1, "c": 1}
    assert quotas(3, {"a": 1, "b": 0}) == {"a": 3, "b": 0}


def _expansion_cfg(server: FakeOpenAIServer) -> RootConfig:
    cfg = RootConfig()
    cfg.topics = TopicsConfig(
        n=6,
        areas={"tabular": 1.0, "graphs": 1.0},
        seeds=[
            TopicSeed("tabular", "Wine quality prediction", "Predict the quality score of wines."),
            TopicSeed("tabular", "Crop yield estimation", "Estimate crop yields from field data."),
        ],
        expand_with_llm=True,
        batch_size=3,
        max_llm_calls=10,
        max_attempts=3,
        llm=LLMConfig(
            model="openai/fake-model",
            api_base=server.base_url,
            max_retries=0,
            timeout_s=10,
            max_tokens=256,
            input_cost_per_token=1e-6,
            output_cost_per_token=2e-6,
        ),  # fmt: skip
    )
    return cfg


def _scripted_topics(messages: list[dict]) -> str:
    """Fake model: three malformed answers, then per request a duplicate and fresh topics."""
    prompt = messages[-1]["content"]
    _scripted_topics.calls += 1
    if _scripted_topics.calls <= 3:
        return "Sure! Here are some ideas: graph stuff."
    area = re.search(r'in the area "([^"]+)"', prompt).group(1)
    count = int(re.search(r"Propose (\d+) new", prompt).group(1))
    n = _scripted_topics.calls
    drafts = [{"title": "Predicting wine quality", "description": "A rephrased duplicate of a seed."}]
    drafts += [
        {"title": f"{area} topic number {n}-{i}", "description": f"Fresh {area} topic."} for i in range(count)
    ]
    return "```json\n" + json.dumps({"topics": drafts}) + "\n```"


def test_model_expansion_fills_each_area_and_drops_duplicates_and_malformed_batches(
    tmp_path: Path, openai_server: FakeOpenAIServer
) -> None:
    _scripted_topics.calls = 0
    openai_server.responder = _scripted_topics
    ctx, topics = _run(tmp_path, _expansion_cfg(openai_server))
    assert len(topics) == 6
    assert sum(t.area == "graphs" for t in topics) == 3 and sum(t.area == "tabular" for t in topics) == 3
    assert [t.title for t in topics[:2]] == ["Wine quality prediction", "Crop yield estimation"]
    assert {t.source for t in topics[2:]} == {"llm:openai/fake-model"}
    assert ctx.report.drops["malformed_output"] == 1 and ctx.report.drops["duplicate"] >= 1
    assert ctx.report.prompt_tokens > 0 and ctx.report.cost_usd > 0
    assert ctx.report.metrics["llm_calls"] == len(openai_server.chat_requests)
    retry = openai_server.chat_requests[1].messages[-1]["content"]
    assert "Your previous reply was rejected" in retry and "no valid JSON" in retry
    assert "Wine quality prediction" in openai_server.chat_requests[-1].messages[-1]["content"]


def test_expansion_stops_at_the_call_cap(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    openai_server.responder = lambda messages: "never JSON"
    cfg = _expansion_cfg(openai_server)
    cfg.topics.max_llm_calls = 4
    ctx, topics = _run(tmp_path, cfg)
    assert len(openai_server.chat_requests) == 4
    assert len(topics) == 2  # only the seeds
    assert ctx.report.drops["malformed_output"] == 2  # a batch of 3 attempts, then one of 1


def test_a_repeated_title_without_comparable_words_is_still_a_duplicate(tmp_path: Path) -> None:
    ctx, topics = _seeded(
        tmp_path,
        ("science", "蛋白质结构预测", "根据氨基酸序列预测蛋白质的三维结构。"),
        ("science", "蛋白质结构预测", "从序列预测蛋白质结构。"),
        ("science", "图像分类", "将图像分到不同的类别。"),
        ("tabular", "Data analysis", "Analyse a table."),
        ("tabular", "data  ANALYSIS", "Analyse another table."),
    )
    assert [t.title for t in topics] == ["蛋白质结构预测", "图像分类", "Data analysis"]
    assert len({t.id for t in topics}) == len(topics) and ctx.report.drops["duplicate"] == 2
