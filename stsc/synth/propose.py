"""The ``propose`` stage: one task idea with candidate datasets per topic (paper step 2).

``propose.kind=llm``: the model answers a JSON object (``ProposalDraft``); output that is not valid
JSON of that shape is re-asked with the error up to ``propose.max_attempts`` times, then the topic
is dropped with reason ``malformed_output``. ``propose.kind=catalog``: topics are matched to offline
catalog datasets by area and keywords, deterministically and without a model; topics no dataset
matches are dropped with reason ``no_catalog_match``.

Outputs (in ``ctx.out_dir``): ``proposals.jsonl`` (``Proposal`` rows); in llm mode also
``items/<topic_id>.json`` per topic (the proposal or the drop, attempts, prompt hashes, tokens and
USD), written as soon as the topic is decided so a rerun skips it; a rerun reports the usage of
those items too, and ``propose.llm.budget_usd`` counts their spend.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stsc.config import RootConfig
from stsc.errors import BudgetExceededError, ModelOutputError
from stsc.hub.records import DatasetMeta, Proposal, TargetSpec, TaskType, Topic
from stsc.hub.text import STOPWORDS, TASK_WORDS, tokens
from stsc.store import StageContext, StageReport, atomic_write_json, iter_jsonl, read_json, write_jsonl

logger = logging.getLogger(__name__)

TOPICS_FILE = "topics.jsonl"
PROPOSALS_FILE = "proposals.jsonl"
_DATASET_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
MIN_RELATIVE_SCORE = 0.5  # catalog mode: weaker candidates than half the best match are left out
DEFAULT_METRIC = {TaskType.CLASSIFICATION: ("accuracy", True), TaskType.REGRESSION: ("rmse", False)}

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "cost_usd")

M = TypeVar("M", bound=BaseModel)


class ProposalDraft(BaseModel):
    """A task proposal for one research topic."""

    # The model answers this object; its JSON schema (with these descriptions) is in the prompt.

    model_config = ConfigDict(extra="forbid")

    task_idea: str = Field(min_length=10, description="one paragraph: what is predicted from what")
    dataset_candidates: list[str] = Field(min_length=1, description="dataset ids, best first")
    target: str | None = Field(default=None, description="column to predict, if known")
    metric: str = Field(min_length=1, description="e.g. accuracy, f1_macro, rmse, mae, r2")
    higher_is_better: bool

    @field_validator("dataset_candidates")
    @classmethod
    def _ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not _DATASET_ID.match(i.strip())]
        if bad:
            raise ValueError(f"dataset ids must look like 'org/name' or 'name', got {bad}")
        return [i.strip() for i in ids]


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in a model reply, ``<think>`` blocks aside: the whole text, a fenced block, or
    the first ``{...}`` object that parses wherever it starts (text with braces before or after it,
    a second object, are ignored). Raises ``ModelOutputError`` when none parses."""
    text = _THINK.sub("", text)
    for candidate in [text.strip(), *(m.strip() for m in _FENCE.findall(text))]:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ModelOutputError("the reply holds no valid JSON object")


def parse_reply(text: str, schema: type[M]) -> M:
    """``schema`` validated from the JSON in ``text``; raises ``ModelOutputError`` saying what is wrong."""
    value = extract_json(text)
    try:
        return schema.model_validate(value)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors()
        )
        raise ModelOutputError(f"the JSON does not match the schema: {problems}") from e


@dataclass
class JsonAnswer:
    """Outcome of ``ask_json``: the value (``None`` after ``max_attempts`` failures), each failed
    attempt's error, and the template name and sha256 of every prompt sent."""

    value: BaseModel | None = None
    errors: list[str] = field(default_factory=list)
    prompts: list[dict[str, str]] = field(default_factory=list)


def ask_json(
    client: Any,
    prompt: str,
    variables: dict[str, Any],
    schema: type[M],
    max_attempts: int,
    report: StageReport,
) -> JsonAnswer:
    """Ask the model (prompt template ``prompt``) for a JSON ``schema`` object.

    Each retry re-renders the template with ``feedback`` naming the previous error, so the model
    sees what to fix; the attempt number salts the response cache, so a retry is never answered
    from the cache by the same bad reply while a rerun of the stage is. Usage of uncached calls is
    added to ``report``. ``LLMError`` (and ``BudgetExceededError``) propagate.
    """
    from stsc.prompts import render

    answer, feedback = JsonAnswer(), ""
    for attempt in range(max(1, max_attempts)):
        rendered = render(
            prompt, **variables, schema=json.dumps(schema.model_json_schema()), feedback=feedback
        )
        answer.prompts.append({"prompt": rendered.name, "sha256": rendered.sha256})
        messages = [{"role": "user", "content": rendered.text}]
        completion = client.complete(messages, meta=rendered.meta, cache_salt=f"attempt-{attempt}")
        if not completion.cached:
            report.add_usage(completion.prompt_tokens, completion.completion_tokens, completion.cost_usd)
        try:
            answer.value = parse_reply(completion.text, schema)
            return answer
        except ModelOutputError as e:
            answer.errors.append(str(e))
            snippet = completion.text.strip()[:300]
            feedback = f"Your previous reply was rejected: {e}. It began: {snippet!r}"
    return answer


# -- catalog mode ----------------------------------------------------------------------------------


def _stable(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


_CLASSIFY_CUES = frozenset(
    "identification identify identifying classify classifying classification recognition recognise "
    "recognize determination determine detect detecting detection diagnosis diagnose type kind "
    "discriminate discrimination taxonomy origin region".split()
)
_REGRESS_CUES = frozenset(
    "estimate estimating estimation amount level content yield mass price temperature efficiency "
    "progression forecast forecasting regression quantity".split()
)


def match_score(topic: Topic, meta: DatasetMeta) -> float:
    """How well ``meta`` serves ``topic``: shared keywords (title words count double) plus a bonus
    when the topic's area is one of the dataset's areas; 0.0 unless the title shares a keyword
    (a word only in the description is too weak a link)."""
    words = tokens(f"{meta.id} {meta.title} {' '.join(meta.tags)}")
    title = tokens(topic.title, STOPWORDS | TASK_WORDS)
    body = tokens(topic.description, STOPWORDS | TASK_WORDS) - title
    if not title & words:
        return 0.0
    return 2.0 * len(title & words) + len(body & words) + (1.5 if topic.area in meta.areas else 0.0)


def pick_target(topic: Topic, meta: DatasetMeta) -> TargetSpec | None:
    """The suggested target of ``meta`` that fits ``topic`` best: words of its column in the title
    (3 each) or only in the description (1 each), plus 2 when the title's cue words agree with its
    task type ("identification" -> classification, "estimate"/"yield"/"price" -> regression). The
    first suggested target wins ties."""
    title = tokens(topic.title)
    words = title | tokens(topic.description)

    def score(target: TargetSpec) -> float:
        column = tokens(target.column.replace("_", " "))
        cues = _CLASSIFY_CUES if target.task_type is TaskType.CLASSIFICATION else _REGRESS_CUES
        return 3 * len(title & column) + len((words - title) & column) + (2 if title & cues else 0)

    best = max(enumerate(meta.targets), key=lambda it: (score(it[1]), -it[0]), default=None)
    return best[1] if best else None


def propose_from_catalog(
    topics: list[Topic], entries: list[DatasetMeta], max_candidates: int, seed: int
) -> tuple[list[Proposal], list[Topic]]:
    """(proposals, unmatched topics). Candidates are the best-scoring datasets (``match_score``)
    scoring at least ``MIN_RELATIVE_SCORE`` of the best; datasets already chosen first for earlier
    topics are slightly penalised, so similar topics spread over similar datasets; ties break by a
    hash of (seed, topic, dataset). The same inputs give the same proposals."""
    used: Counter[str] = Counter()
    proposals, unmatched = [], []
    for topic in topics:
        scored = [(match_score(topic, m), m) for m in entries]
        ranked = sorted(
            ((s - 0.5 * used[m.id], _stable(seed, topic.id, m.id), m) for s, m in scored if s > 0),
            key=lambda x: (-x[0], x[1]),
        )
        if not ranked:
            unmatched.append(topic)
            continue
        chosen = [m for score, _, m in ranked[:max_candidates] if score >= MIN_RELATIVE_SCORE * ranked[0][0]]
        used[chosen[0].id] += 1
        target = pick_target(topic, chosen[0])
        task_type = target.task_type if target else TaskType.CLASSIFICATION
        metric, higher = DEFAULT_METRIC[task_type]
        what = f"predict `{target.column}` ({task_type.value})" if target else "build a predictive model"
        proposals.append(
            Proposal(
                id=f"{topic.id}-p",
                topic_id=topic.id,
                topic_title=topic.title,
                area=topic.area,
                task_idea=f"{topic.title}: {what} on {chosen[0].title} ({chosen[0].id}).",
                dataset_candidates=[m.id for m in chosen],
                target=target.column if target else None,
                metric=metric,
                higher_is_better=higher,
                source="catalog",
            )
        )
    return proposals, unmatched


# -- llm mode --------------------------------------------------------------------------------------


def _catalog_listing(entries: list[DatasetMeta]) -> list[dict[str, Any]]:
    return [
        {"id": m.id, "title": m.title, "description": m.description, "targets": [t.column for t in m.targets]}
        for m in entries
    ]


def propose_one(
    client: Any, topic: Topic, cfg: RootConfig, catalog: list[dict[str, Any]], report: StageReport
) -> dict[str, Any]:
    """The item record of one topic: ``{"status": "ok", "proposal": ...}`` or
    ``{"status": "dropped", "reason": "malformed_output", ...}``, with attempts, prompt hashes and
    ``usage`` (tokens and USD of the calls sent for it, also added to ``report``)."""
    variables = {
        "topic": topic.model_dump(),
        "hub_kind": cfg.hub.kind,
        "catalog": catalog,
        "max_candidates": cfg.propose.max_candidates,
    }
    spent = StageReport(stage=report.stage)
    answer = ask_json(client, cfg.propose.prompt, variables, ProposalDraft, cfg.propose.max_attempts, spent)
    report.add_usage(spent.prompt_tokens, spent.completion_tokens, spent.cost_usd)
    item: dict[str, Any] = {
        "topic_id": topic.id,
        "errors": answer.errors,
        "prompts": answer.prompts,
        "usage": {k: getattr(spent, k) for k in USAGE_KEYS},
    }
    if answer.value is None:
        return item | {"status": "dropped", "reason": "malformed_output", "proposal": None}
    draft: ProposalDraft = answer.value  # type: ignore[assignment]
    proposal = Proposal(
        id=f"{topic.id}-p",
        topic_id=topic.id,
        topic_title=topic.title,
        area=topic.area,
        task_idea=draft.task_idea,
        dataset_candidates=list(dict.fromkeys(draft.dataset_candidates))[: cfg.propose.max_candidates],
        target=draft.target,
        metric=draft.metric,
        higher_is_better=draft.higher_is_better,
        source=f"llm:{cfg.propose.llm.model}",
    )
    return item | {"status": "ok", "reason": None, "proposal": proposal.model_dump(mode="json")}


def _propose_with_llm(
    cfg: RootConfig, ctx: StageContext, topics: list[Topic], entries: list[DatasetMeta]
) -> list[Proposal]:
    from stsc.llm import LLMClient

    done = {t.id: read_json(p) for t in topics if (p := ctx.out_dir / "items" / f"{t.id}.json").exists()}
    usage = [item.get("usage") or {} for item in done.values()]  # items of earlier runs of the stage
    ctx.report.add_usage(*(sum(u.get(k, 0) for u in usage) for k in USAGE_KEYS))
    budget = cfg.propose.llm.budget_usd
    client = LLMClient(
        cfg.propose.llm,
        cache_dir=ctx.store / "llm_cache",
        budget_usd=None if budget is None else max(0.0, budget - ctx.report.cost_usd),
    )
    client.check_credentials()
    catalog = _catalog_listing(entries) if cfg.hub.kind == "offline" else []
    proposals: list[Proposal] = []
    try:
        for i, topic in enumerate(topics):
            path = ctx.out_dir / "items" / f"{topic.id}.json"
            if topic.id in done:
                item = done[topic.id]
            else:
                try:
                    item = propose_one(client, topic, cfg, catalog, ctx.report)
                except BudgetExceededError:
                    logger.warning(
                        "propose: budget spent; %d topics left without a proposal", len(topics) - i
                    )
                    ctx.report.drop("budget_exceeded", len(topics) - i)
                    break
                atomic_write_json(path, item)
            if item["status"] == "ok":
                proposals.append(Proposal.model_validate(item["proposal"]))
            else:
                ctx.report.drop(item["reason"])
    finally:
        client.close()
    return proposals


def read_topics(folder: Path) -> list[Topic]:
    return [Topic.model_validate(row) for row in iter_jsonl(Path(folder) / TOPICS_FILE)]


def run_propose(cfg: RootConfig, ctx: StageContext) -> None:
    """Stage ``propose``: ``<topics>/topics.jsonl`` -> ``proposals.jsonl`` (see module doc).

    Raises ``LLMError`` when the model cannot be reached (topics decided so far are kept) and
    ``MissingAPIKeyError`` before any call when the model's key is not set.
    """
    from stsc.hub.source import catalog_dir

    topics = read_topics(ctx.input("topics"))
    ctx.report.add_in(len(topics))
    entries: list[DatasetMeta] = []
    if cfg.propose.kind == "catalog" or cfg.hub.kind == "offline":
        from stsc.hub.catalog import Catalog

        entries = Catalog(catalog_dir(cfg.hub, ctx.store), sources=cfg.hub.catalog_sources).entries()
    if cfg.propose.kind == "catalog":
        proposals, unmatched = propose_from_catalog(topics, entries, cfg.propose.max_candidates, ctx.seed)
        if unmatched:
            ctx.report.drop("no_catalog_match", len(unmatched))
    else:
        proposals = _propose_with_llm(cfg, ctx, topics, entries)
    write_jsonl(ctx.out_dir / PROPOSALS_FILE, [p.model_dump(mode="json") for p in proposals])
    ctx.report.add_out(len(proposals))
    ctx.report.metrics["distinct_candidate_datasets"] = len(
        {d for p in proposals for d in p.dataset_candidates}
    )
    ctx.log_table(
        "proposals",
        [
            {"topic": p.topic_title, "datasets": ", ".join(p.dataset_candidates), "target": p.target}
            for p in proposals
        ],
    )
