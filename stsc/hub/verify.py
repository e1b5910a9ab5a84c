"""The ``verify`` stage: check every candidate dataset of every proposal against a dataset source.

A candidate is looked up by its exact id; when that does not exist, the source is searched with
its name and the first hit that passes the rules is taken (else the first hit's rejection is
kept). Each candidate checked yields one ``VerifiedDataset`` row, accepted or rejected with its
rule; candidates are alternatives, so once ``dataset_filter.max_accepted_per_proposal`` of a
proposal passed, its later candidates are not checked.

Outputs (in ``ctx.out_dir``): ``items/<proposal_id>.json`` per proposal, written atomically as soon
as it is decided (a rerun skips them), and ``datasets.jsonl`` with every row. Funnel: one item per
candidate; each rejection is a drop named by its rule.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stsc.config import DatasetFilterConfig, RootConfig
from stsc.errors import DatasetNotFoundError
from stsc.hub.records import DatasetMeta, Decision, Proposal, TargetSpec, TaskType, VerifiedDataset
from stsc.hub.rules import Rule, Verdict, judge
from stsc.hub.source import DatasetSource, make_source
from stsc.store import StageContext, atomic_write_json, iter_jsonl, read_json, write_jsonl

logger = logging.getLogger(__name__)

PROPOSALS_FILE = "proposals.jsonl"
DATASETS_FILE = "datasets.jsonl"


class Verifier:
    """Verdicts for proposals' candidates; lookups are memoised, so a dataset named by many
    proposals is fetched once."""

    def __init__(self, source: DatasetSource, rules: DatasetFilterConfig, search_limit: int = 5):
        self.source = source
        self.rules = rules
        self.search_limit = search_limit
        self._info: dict[str, DatasetMeta | None] = {}
        self._search: dict[str, list[str]] = {}

    def info(self, dataset_id: str) -> DatasetMeta | None:
        """Metadata of exactly ``dataset_id``, ``None`` if it does not exist (``HubError`` propagates)."""
        if dataset_id not in self._info:
            try:
                self._info[dataset_id] = self.source.info(dataset_id)
            except DatasetNotFoundError:
                self._info[dataset_id] = None
        return self._info[dataset_id]

    def search(self, requested_id: str) -> list[str]:
        query = requested_id.rsplit("/", 1)[-1]
        if query not in self._search:
            self._search[query] = self.source.search(query, self.search_limit)
        return self._search[query]

    def candidate(self, proposal: Proposal, requested_id: str) -> VerifiedDataset:
        """The row for one candidate: exact id first, then the source's search hits."""
        meta = self.info(requested_id)
        if meta is not None:
            return self._row(proposal, requested_id, meta, "exact")
        first = None
        for hit in self.search(requested_id):
            hit_meta = self.info(hit)
            if hit_meta is None:
                continue
            row = self._row(proposal, requested_id, hit_meta, "search")
            if row.decision is Decision.ACCEPTED:
                return row
            first = first or row
        return first or _not_found(proposal, requested_id, self.source.kind, accept=not self.rules.enabled)

    def proposal(self, proposal: Proposal) -> list[VerifiedDataset]:
        """Rows for the candidates of ``proposal``, in order, until ``max_accepted_per_proposal``
        passed (0: all); a dataset accepted twice is a ``duplicate``."""
        rows, accepted = [], set()
        limit = self.rules.max_accepted_per_proposal
        for requested_id in dict.fromkeys(proposal.dataset_candidates):
            if limit and len(accepted) >= limit:
                break
            row = self.candidate(proposal, requested_id)
            if row.decision is Decision.ACCEPTED and row.dataset_id in accepted:
                row = row.model_copy(update={"decision": Decision.REJECTED, "reason": str(Rule.DUPLICATE)})
            if row.decision is Decision.ACCEPTED:
                accepted.add(row.dataset_id)
            rows.append(row)
        return rows

    def _row(self, proposal: Proposal, requested_id: str, meta: DatasetMeta, how: str) -> VerifiedDataset:
        verdict = judge(meta, self.rules, requested_id=requested_id, target=proposal.target)
        return to_record(proposal, requested_id, meta, verdict, how)


def _targets(meta: DatasetMeta, target: str | None) -> list[TargetSpec]:
    """The proposal's target first (typed from the schema when the source did not suggest it)."""
    targets = list(meta.targets)
    dtypes = {c.name: c for c in meta.columns}
    if target and target in dtypes and all(t.column != target for t in targets):
        col = dtypes[target]
        numeric = col.dtype == "float" or (col.dtype == "int" and (col.n_unique or 0) > 20)
        task = TaskType.REGRESSION if numeric else TaskType.CLASSIFICATION
        targets.insert(
            0, TargetSpec(column=target, task_type=task, n_classes=None if numeric else col.n_unique)
        )
    targets.sort(key=lambda t: t.column != target)
    return targets


def to_record(
    proposal: Proposal, requested_id: str, meta: DatasetMeta, verdict: Verdict, resolved_by: str
) -> VerifiedDataset:
    """The ``VerifiedDataset`` row of ``meta`` judged by ``verdict``."""
    return VerifiedDataset(
        proposal_id=proposal.id,
        topic_id=proposal.topic_id,
        requested_id=requested_id,
        dataset_id=meta.id,
        revision=meta.revision,
        license=meta.license,
        size_bytes=meta.size_bytes,
        n_rows=meta.n_rows,
        config_name=meta.config_name,
        splits=meta.splits,
        columns=meta.columns,
        downloads=meta.downloads,
        gated=meta.gated,
        private=meta.private,
        source=meta.source,
        local_path=meta.local_path,
        description=meta.description,
        license_note=meta.license_note,
        resolved_by=resolved_by,
        targets=_targets(meta, proposal.target),
        decision=Decision.ACCEPTED if verdict.accepted else Decision.REJECTED,
        reason=verdict.reason,
    )


def _not_found(proposal: Proposal, requested_id: str, source: str, accept: bool = False) -> VerifiedDataset:
    """A candidate the source does not know: rejected, or (verification switched off) passed on
    unchecked as the proposal named it, to fail or not at generation time."""
    return VerifiedDataset(
        proposal_id=proposal.id,
        topic_id=proposal.topic_id,
        requested_id=requested_id,
        dataset_id=requested_id if accept else None,
        source=source,
        decision=Decision.ACCEPTED if accept else Decision.REJECTED,
        reason="unverified" if accept else str(Rule.NOT_FOUND),
    )


def read_proposals(folder: Path) -> list[Proposal]:
    return [Proposal.model_validate(row) for row in iter_jsonl(Path(folder) / PROPOSALS_FILE)]


def run_verify(cfg: RootConfig, ctx: StageContext) -> None:
    """Stage ``verify``: ``<propose>/proposals.jsonl`` -> ``datasets.jsonl`` (see module doc).

    Raises ``HubError`` when the source cannot answer; proposals decided so far are kept.
    """
    proposals = read_proposals(ctx.input("propose"))
    verifier = Verifier(make_source(cfg.hub, ctx.store), cfg.dataset_filter, cfg.hub.search_limit)
    rows: list[VerifiedDataset] = []
    for proposal in proposals:
        item = ctx.out_dir / "items" / f"{proposal.id}.json"
        if item.exists():
            found = [VerifiedDataset.model_validate(r) for r in read_json(item)]
        else:
            found = verifier.proposal(proposal)
            atomic_write_json(item, [r.model_dump(mode="json") for r in found])
        rows.extend(found)
    _report(ctx, proposals, rows)
    write_jsonl(ctx.out_dir / DATASETS_FILE, [r.model_dump(mode="json") for r in rows])
    logger.info("verify: %d of %d candidates accepted", ctx.report.items_out, ctx.report.items_in)


def _report(ctx: StageContext, proposals: list[Proposal], rows: list[VerifiedDataset]) -> None:
    accepted = [r for r in rows if r.decision is Decision.ACCEPTED]
    ctx.report.add_in(len(rows))
    ctx.report.add_out(len(accepted))
    for row in rows:
        if row.decision is Decision.REJECTED:
            ctx.report.drop(row.reason.split(":", 1)[0])
    ctx.report.metrics.update(
        {
            "proposals": len(proposals),
            "proposals_with_dataset": len({r.proposal_id for r in accepted}),
            "distinct_datasets": len({r.dataset_id for r in accepted}),
            "resolved_by_search": sum(r.resolved_by == "search" for r in accepted),
            "candidates_unchecked": sum(len(set(p.dataset_candidates)) for p in proposals) - len(rows),
        }
    )
    ctx.log_table(
        "verified_datasets",
        [
            {k: getattr(r, k) for k in ("proposal_id", "requested_id", "dataset_id", "revision", "license")}
            | {"decision": str(r.decision), "reason": r.reason, "n_rows": r.n_rows}
            for r in rows
        ],
    )
