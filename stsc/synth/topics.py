"""The ``topics`` stage: research topics to build tasks around (paper step 1).

Curated topics (``topics.seeds``) come first. ``topics.n`` is split over the areas in proportion to
``topics.areas`` (largest remainder); each area takes its share from its own seeds in a seeded
random order. Shortfalls are asked of the model when ``topics.expand_with_llm`` (``batch_size``
topics per call, at most ``max_llm_calls`` calls), and otherwise, or when the model cannot fill
them, filled from the remaining seeds of any area. A topic whose title repeats an earlier one (case
and spacing aside) or whose title's word set (task words such as "prediction" ignored) has Jaccard
>= ``dedup_threshold`` with an earlier one's is a duplicate.

Output: ``ctx.out_dir/topics.jsonl`` (``Topic`` rows). Funnel: every candidate topic (seed or
model-proposed) is an item in; drops are ``duplicate``, ``over_quota`` (seed not needed) and
``malformed_output`` (a model batch that never parsed).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stsc.config import RootConfig, TopicsConfig
from stsc.errors import BudgetExceededError
from stsc.hub.records import Topic
from stsc.hub.text import STOPWORDS, TASK_WORDS, jaccard, tokens
from stsc.store import StageContext, StageReport, write_jsonl

# Task words that name different problems ("face detection" is not "face recognition"); the other
# task words ("prediction", "classification", "estimation", ...) are ignored when comparing titles.
_DISTINCT_TASKS = {
    word: kind
    for kind, words in {
        "detection": ("detect", "detecting", "detection"),
        "recognition": ("recognise", "recognize", "recognising", "recognizing", "recognition"),
    }.items()
    for word in words
}
_IGNORED = STOPWORDS | (TASK_WORDS - _DISTINCT_TASKS.keys())


def title_words(title: str) -> set[str]:
    """The words two topic titles are compared by: subject words, plus the kind of task where it
    names a different problem (detection, recognition)."""
    return {_DISTINCT_TASKS.get(w, w) for w in tokens(title, _IGNORED)}


logger = logging.getLogger(__name__)

TOPICS_FILE = "topics.jsonl"


class TopicDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=5, max_length=200)
    description: str = Field(min_length=10, max_length=2000)


class TopicBatch(BaseModel):
    """New research topics."""

    # The model answers this object when asked for more topics; its JSON schema is in the prompt.

    model_config = ConfigDict(extra="forbid")

    topics: list[TopicDraft] = Field(min_length=1)


def topic_id(area: str, title: str) -> str:
    """Readable, stable id: ``<title-slug>-<6 hex of sha256(area|title)>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:48].rstrip("-")
    return f"{slug}-{hashlib.sha256(f'{area}|{title}'.encode()).hexdigest()[:6]}"


def make_topic(area: str, title: str, description: str, source: str) -> Topic:
    title = " ".join(title.split())
    return Topic(
        id=topic_id(area, title), area=area, title=title, description=description.strip(), source=source
    )


def quotas(n: int, weights: dict[str, float]) -> dict[str, int]:
    """``n`` split over areas in proportion to ``weights`` (largest remainder; ties by name)."""
    positive = {a: w for a, w in weights.items() if w > 0}
    total = sum(positive.values())
    if n <= 0 or total <= 0:
        return dict.fromkeys(weights, 0)
    exact = {a: n * w / total for a, w in positive.items()}
    out = {a: int(x) for a, x in exact.items()}
    by_remainder = sorted(positive, key=lambda a: (-(exact[a] - out[a]), a))
    for area in by_remainder[: n - sum(out.values())]:
        out[area] += 1
    return {a: out.get(a, 0) for a in weights}


def _same_title(title: str) -> str:
    """What two titles are equal by: case and runs of spaces aside."""
    return " ".join(title.casefold().split())


class TopicPool:
    """Accepted topics in order, rejecting repeated and near-duplicate titles."""

    def __init__(self, threshold: float, report: StageReport):
        self.threshold = threshold
        self.report = report
        self.topics: list[Topic] = []
        self._words: list[set[str]] = []
        self._titles: set[str] = set()

    def is_duplicate(self, title: str) -> bool:
        """A title already accepted, or one whose words are near an accepted one's. The first test
        covers titles with no words to compare (non-Latin scripts, only task words)."""
        if _same_title(title) in self._titles:
            return True
        words = title_words(title)
        return any(jaccard(words, other) >= self.threshold for other in self._words)

    def add(self, topic: Topic) -> bool:
        """Add ``topic`` unless it duplicates an accepted one (counted as a ``duplicate`` drop)."""
        self.report.add_in()
        if self.is_duplicate(topic.title):
            self.report.drop("duplicate")
            return False
        self.topics.append(topic)
        self._words.append(title_words(topic.title))
        self._titles.add(_same_title(topic.title))
        return True

    def count(self, area: str) -> int:
        return sum(t.area == area for t in self.topics)


def _weights(cfg: TopicsConfig, seeds: list[Topic]) -> dict[str, float]:
    if cfg.areas:
        return dict(cfg.areas)
    return dict.fromkeys(dict.fromkeys(t.area for t in seeds), 1.0)


def _take_seeds(pool: TopicPool, seeds: list[Topic], want: dict[str, int], rng: random.Random) -> list[Topic]:
    """Fill each area's quota from its seeds in shuffled order; returns the seeds left over."""
    order = list(seeds)
    rng.shuffle(order)
    left = []
    for topic in order:
        if pool.count(topic.area) < want.get(topic.area, 0) and not pool.is_duplicate(topic.title):
            pool.add(topic)
        else:
            left.append(topic)
    return left


def _expand(cfg: TopicsConfig, ctx: StageContext, pool: TopicPool, want: dict[str, int]) -> None:
    """Ask the model for topics of areas short of their quota, within ``max_llm_calls``."""
    from stsc.llm import LLMClient
    from stsc.synth.propose import ask_json

    client = LLMClient(cfg.llm, cache_dir=ctx.store / "llm_cache", budget_usd=cfg.llm.budget_usd)
    client.check_credentials()
    calls, batch = 0, 0
    try:
        while calls < cfg.max_llm_calls:
            short = [a for a in want if pool.count(a) < want[a]]
            if not short:
                return
            area = short[batch % len(short)]
            batch += 1
            existing = [t.title for t in pool.topics]
            variables: dict[str, Any] = {
                "area": area,
                "count": min(cfg.batch_size, want[area] - pool.count(area)),
                "existing": existing,
                "round": batch,
            }
            attempts = min(cfg.max_attempts, cfg.max_llm_calls - calls)
            answer = ask_json(client, cfg.prompt, variables, TopicBatch, attempts, ctx.report)
            calls += len(answer.prompts)
            if answer.value is None:
                ctx.report.add_in()
                ctx.report.drop("malformed_output")
                continue
            for draft in answer.value.topics:  # type: ignore[attr-defined]
                if pool.count(area) < want[area]:
                    pool.add(make_topic(area, draft.title, draft.description, f"llm:{cfg.llm.model}"))
                else:
                    ctx.report.add_in()
                    ctx.report.drop("over_quota")
    except BudgetExceededError:
        logger.warning("topics: model budget spent after %d calls", calls)
    finally:
        ctx.report.metrics["llm_calls"] = calls
        client.close()


def _unique_seeds(seeds: list[Topic], cfg: TopicsConfig, ctx: StageContext) -> list[Topic]:
    """Seeds without near-duplicates, the first in configured order kept (drops are reported)."""
    scratch = TopicPool(cfg.dedup_threshold, StageReport(stage="seeds"))
    unique = [t for t in seeds if scratch.add(t)]
    for _ in range(len(seeds) - len(unique)):
        ctx.report.add_in()
        ctx.report.drop("duplicate")
    return unique


def select_topics(cfg: TopicsConfig, ctx: StageContext) -> list[Topic]:
    """The stage's topics (see module doc), curated ones in their configured order, then the
    model's; deterministic for a given seed and model answers."""
    seeds = _unique_seeds(
        [make_topic(s.area, s.title, s.description, "curated") for s in cfg.seeds], cfg, ctx
    )
    weights = _weights(cfg, seeds)
    want = quotas(cfg.n, weights)
    pool = TopicPool(cfg.dedup_threshold, ctx.report)
    left = _take_seeds(pool, seeds, want, random.Random(f"topics:{ctx.seed}"))
    if cfg.expand_with_llm and len(pool.topics) < cfg.n:
        _expand(cfg, ctx, pool, want)
    for topic in sorted(left, key=lambda t: -weights.get(t.area, 0.0)):
        if len(pool.topics) >= cfg.n:
            ctx.report.add_in()
            ctx.report.drop("over_quota")
        else:
            pool.add(topic)
    curated = {t.id: i for i, t in enumerate(seeds)}
    order = {t.id: curated.get(t.id, len(seeds) + i) for i, t in enumerate(pool.topics)}
    return sorted(pool.topics, key=lambda t: order[t.id])


def run_topics(cfg: RootConfig, ctx: StageContext) -> None:
    """Stage ``topics``: writes ``topics.jsonl`` with up to ``topics.n`` topics.

    Raises ``MissingAPIKeyError`` before any call when expansion needs a key that is not set, and
    ``LLMError`` when the model cannot be reached.
    """
    topics = select_topics(cfg.topics, ctx)
    if len(topics) < cfg.topics.n:
        logger.warning(
            "topics: only %d of topics.n=%d topics (add seeds or set topics.expand_with_llm=true)",
            len(topics),
            cfg.topics.n,
        )
    write_jsonl(ctx.out_dir / TOPICS_FILE, [t.model_dump(mode="json") for t in topics])
    ctx.report.add_out(len(topics))
    ctx.report.metrics.update(
        {f"area.{a}": sum(t.area == a for t in topics) for a in sorted({t.area for t in topics})}
    )
    ctx.log_table(
        "topics", [{"id": t.id, "area": t.area, "title": t.title, "source": t.source} for t in topics]
    )
