"""The ``generate`` stage: accepted datasets -> task drafts (paper step 4).

Input: ``<verify>/datasets.jsonl`` (``VerifiedDataset`` rows; only ``decision=accepted`` ones are
used). The proposals behind them (topic title, area, task idea) are read from the ``propose`` stage
that ``verify`` consumed, when its folder is in the store.

Outputs (in ``ctx.out_dir``):

- ``tasks/<task_id>/``: one draft task folder per generated task (``stsc.synth.task``), written
  atomically. Drafts of ``generator=llm`` still carry ``build/prepare.py`` and the raw table; the
  ``validate`` stage runs them.
- ``generated.jsonl``: one row per source item (a dataset for ``template``, a proposal/dataset pair
  for ``llm``) with its task ids, drop reasons, tokens and cost. A rerun skips items already listed.

Funnel: items in = source items; items out = task drafts; drops = planned tasks that could not be
made, by reason (``no_target``, ``too_few_rows``, ``load_failed``, ``malformed_output``, ...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stsc.config import RootConfig
from stsc.errors import BudgetExceededError, HubError, LLMError, ModelOutputError, StageError
from stsc.hub.records import Decision, Proposal, TargetSpec, VerifiedDataset
from stsc.store import JsonlJournal, StageContext, iter_jsonl
from stsc.synth.task import MAX_TASK_ID, META_FILE, TaskDraft, TaskMeta, write_task

log = logging.getLogger(__name__)

DATASETS_FILE = "datasets.jsonl"
PROPOSALS_FILE = "proposals.jsonl"
JOURNAL_FILE = "generated.jsonl"
TASKS_DIR = "tasks"


@dataclass(frozen=True)
class GenerationSource:
    """What a generator builds tasks from: one verified dataset plus the proposal behind it."""

    key: str  # stable item id in generated.jsonl
    record: VerifiedDataset
    topic_id: str
    topic_title: str
    area: str
    title: str  # human title of the dataset
    targets: tuple[TargetSpec, ...]
    task_idea: str = ""
    metric_hint: str | None = None


@dataclass(frozen=True)
class SourceDrop:
    reason: str  # short funnel reason
    message: str


@dataclass
class GenerationResult:
    drafts: list[TaskDraft] = field(default_factory=list)
    drops: list[SourceDrop] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    prompt_sha256: str | None = None


class TaskGenerator(Protocol):
    """Builds task drafts. ``per`` says what one source is ("dataset" or "proposal")."""

    name: str
    per: str

    def generate(self, source: GenerationSource) -> GenerationResult:
        """Drafts for ``source``. Raises ``HubError`` (data unavailable), ``ModelOutputError``
        (unusable model output) or ``LLMError``; ``generate`` records each as a drop."""
        ...


def make_generator(cfg: RootConfig, store: Path, seed: int, spent_usd: float = 0.0) -> TaskGenerator:
    """The generator named by ``cfg.generator.kind`` (``template`` or ``llm``); ``spent_usd`` (the
    spend of earlier runs of the stage) counts against ``generator.llm.budget_usd``."""
    if cfg.generator.kind == "template":
        from stsc.synth.template import TemplateGenerator

        return TemplateGenerator(cfg.generator, seed)
    if cfg.generator.kind == "llm":
        from stsc.synth.llm_generator import LLMTaskGenerator

        return LLMTaskGenerator.from_config(cfg.generator, store, seed, spent_usd)
    raise StageError(f"generator.kind={cfg.generator.kind!r} is not valid; choose one of ['template', 'llm']")


def read_verified(folder: Path) -> list[VerifiedDataset]:
    path = Path(folder) / DATASETS_FILE
    if not path.exists():
        raise StageError(f"{path} is missing; rerun the verify stage")
    return [VerifiedDataset.model_validate(row) for row in iter_jsonl(path)]


def read_proposal_index(propose_dir: Path | None) -> dict[str, Proposal]:
    """Proposals by id; without a propose folder, topic titles fall back to topic ids."""
    if propose_dir is None:
        log.warning("generate: no proposals given; topic titles fall back to topic ids")
        return {}
    path = Path(propose_dir) / PROPOSALS_FILE
    if not path.exists():
        raise StageError(f"{path} is missing; rerun the propose stage")
    return {p.id: p for p in (Proposal.model_validate(r) for r in iter_jsonl(path))}


def dataset_title(record: VerifiedDataset) -> str:
    if record.source == "offline":
        from stsc.hub.catalog_specs import SPEC_BY_ID

        spec = SPEC_BY_ID.get(record.dataset_id or "")
        if spec is not None:
            return spec.title
    return record.dataset_id or record.requested_id


def build_sources(
    records: Iterable[VerifiedDataset], per: str, proposals: dict[str, Proposal]
) -> list[GenerationSource]:
    """One source per accepted dataset (``per="dataset"``: the first proposal naming it gives the
    topic) or per accepted proposal/dataset pair (``per="proposal"``), in input order."""
    from stsc.hub.frames import suggest_targets

    sources: dict[str, GenerationSource] = {}
    for r in records:
        if r.decision is not Decision.ACCEPTED or not r.dataset_id:
            continue
        key = r.dataset_id if per == "dataset" else f"{r.proposal_id}:{r.dataset_id}"
        if key in sources:
            continue
        p = proposals.get(r.proposal_id)
        targets = suggest_targets(r)
        if p is not None and p.target and per == "proposal":
            targets = sorted(targets, key=lambda t: t.column != p.target)
        sources[key] = GenerationSource(
            key=key, record=r, topic_id=r.topic_id, topic_title=p.topic_title if p else r.topic_id,
            area=p.area if p else "unknown", title=dataset_title(r), targets=tuple(targets),
            task_idea=p.task_idea if p else "", metric_hint=p.metric if p else None,
        )  # fmt: skip
    return list(sources.values())


_CLAIM = threading.Lock()


def _identity(meta: Any) -> tuple:
    """What makes two drafts the same task (ids are lossy slugs of it)."""
    return (meta.dataset_id, meta.target, meta.metric, meta.generator, meta.topic_id)


def unique_id(draft: TaskDraft, tasks_dir: Path) -> TaskDraft:
    """``draft``, renamed with a suffix of its identity's hash when a different task already holds
    its id (two datasets or targets whose names slug alike); an existing folder of the same task
    (a resumed run) keeps the id."""
    folder = tasks_dir / draft.task_id
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        return draft
    existing = TaskMeta.model_validate_json(meta_file.read_text(encoding="utf-8"))
    if _identity(existing) == _identity(draft.meta):
        return draft
    suffix = hashlib.sha256(repr(_identity(draft.meta)).encode()).hexdigest()[:6]
    task_id = f"{draft.task_id[: MAX_TASK_ID - 7].rstrip('-')}-{suffix}"
    log.warning("generate: %s is taken by another task; this one is %s", draft.task_id, task_id)
    return dataclasses.replace(
        draft,
        config=draft.config.model_copy(update={"id": task_id}),
        meta=draft.meta.model_copy(update={"task_id": task_id}),
    )


def generate_one(generator: TaskGenerator, source: GenerationSource, tasks_dir: Path) -> dict:
    """Run ``generator`` on ``source``, write its drafts, and return the journal row."""
    try:
        result = generator.generate(source)
    except HubError as e:
        result = GenerationResult(drops=[SourceDrop("load_failed", str(e))])
    except ModelOutputError as e:
        result = GenerationResult(drops=[SourceDrop("malformed_output", str(e))])
    except BudgetExceededError as e:
        result = GenerationResult(drops=[SourceDrop("budget_exceeded", str(e))])
    except LLMError as e:
        result = GenerationResult(drops=[SourceDrop("llm_error", str(e))])
    written = []
    for draft in result.drafts:
        with _CLAIM:  # sources are generated concurrently; two may slug to one id
            draft = unique_id(draft, tasks_dir)
            folder = tasks_dir / draft.task_id
            if folder.exists():
                log.info("generate: %s already written (resumed run)", draft.task_id)
            else:
                write_task(folder, draft)
        written.append(draft.task_id)
    for drop in result.drops:
        log.info("generate: %s dropped a task: %s (%s)", source.key, drop.reason, drop.message)
    return {
        "key": source.key,
        "dataset_id": source.record.dataset_id,
        "proposal_id": source.record.proposal_id,
        "generator": generator.name,
        "task_ids": written,
        "drops": [{"reason": d.reason, "message": d.message} for d in result.drops],
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost_usd": result.cost_usd,
        "prompt_sha256": result.prompt_sha256,
    }


def run_generate(cfg: RootConfig, ctx: StageContext) -> None:
    """Stage ``generate`` (see module doc). Resumable: items in ``generated.jsonl`` are skipped, and
    their cost counts against ``generator.llm.budget_usd``.

    Raises ``StageError`` when the verify output is missing.
    """
    verify_dir = ctx.input("verify")
    journal = JsonlJournal(ctx.out_dir / JOURNAL_FILE)
    rows = journal.read()
    done = {row["key"] for row in rows}
    generator = make_generator(cfg, ctx.store, ctx.seed, sum(row["cost_usd"] for row in rows))
    proposals = read_proposal_index(ctx.inputs.get("propose"))
    sources = build_sources(read_verified(verify_dir), generator.per, proposals)
    todo = [s for s in sources if s.key not in done]
    tasks_dir = ctx.out_dir / TASKS_DIR
    lock = threading.Lock()
    log.info(
        "generate: %d sources (%d already done) with generator %s", len(sources), len(done), generator.name
    )

    def work(source: GenerationSource) -> None:
        row = generate_one(generator, source, tasks_dir)
        with lock:
            journal.append(row)

    workers = max(1, cfg.generator.llm.concurrency) if generator.per == "proposal" else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(work, s) for s in todo]:
            future.result()
    _report(ctx, journal.read())


def _report(ctx: StageContext, rows: list[dict]) -> None:
    """The funnel of every item ever processed by this stage folder (resumed runs included)."""
    ctx.report.add_in(len(rows))
    ctx.report.add_out(sum(len(r["task_ids"]) for r in rows))
    for row in rows:
        for drop in row["drops"]:
            ctx.report.drop(drop["reason"])
        ctx.report.add_usage(row["prompt_tokens"], row["completion_tokens"], row["cost_usd"])
    ctx.report.metrics["datasets_with_tasks"] = float(len({r["dataset_id"] for r in rows if r["task_ids"]}))
    ctx.log_table(
        "generated",
        [
            {"key": r["key"], "tasks": len(r["task_ids"]), "drops": ",".join(d["reason"] for d in r["drops"])}
            for r in rows
        ],
    )
