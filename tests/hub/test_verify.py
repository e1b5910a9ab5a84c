"""The verify stage on both sources: every decision recorded with its rule, revision and funnel."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsc.config import RootConfig
from stsc.errors import HubError
from stsc.hub import load_frame
from stsc.hub.catalog import Catalog
from stsc.hub.records import Decision, Proposal, VerifiedDataset
from stsc.hub.verify import DATASETS_FILE, run_verify
from stsc.store import iter_jsonl, write_jsonl
from tests.fakes.hub_server import FakeHubServer
from tests.hub.stages import make_ctx


def _proposal(pid: str, candidates: list[str], target: str | None = None) -> Proposal:
    return Proposal(
        id=pid, topic_id=f"topic-{pid}", topic_title=f"Topic {pid}", area="tabular", task_idea="Predict something useful.",
        dataset_candidates=candidates, target=target, metric="accuracy", higher_is_better=True, source="test",
    )  # fmt: skip


def _run(tmp_path: Path, cfg: RootConfig, proposals: list[Proposal]):
    propose_dir = tmp_path / "propose"
    write_jsonl(propose_dir / "proposals.jsonl", [p.model_dump(mode="json") for p in proposals])
    ctx = make_ctx(tmp_path, "verify", inputs={"propose": propose_dir})
    run_verify(cfg, ctx)
    rows = [VerifiedDataset.model_validate(r) for r in iter_jsonl(ctx.out_dir / DATASETS_FILE)]
    return ctx, rows


def _hub_cfg(server: FakeHubServer) -> RootConfig:
    cfg = RootConfig()
    cfg.hub.kind, cfg.hub.endpoint, cfg.hub.timeout_s = "huggingface", server.url, 5.0
    return cfg


HUB_CASES = {
    # requested id -> (found id, decision reason, resolved_by)
    "acme/customer-churn": ("acme/customer-churn", "ok", "exact"),
    "acme/gated-clinical-notes": ("acme/gated-clinical-notes", "gated", "exact"),
    "acme/unlicensed-reviews": ("acme/unlicensed-reviews", "license:unknown", "exact"),
    "acme/noncommercial-faces": ("acme/noncommercial-faces", "license:cc-by-nc-4.0", "exact"),
    "acme/web-crawl-huge": ("acme/web-crawl-huge", "too_large:16000000000B>5000000000B", "exact"),
    "acme/tiny-survey": ("acme/tiny-survey", "too_small:40<100 rows", "exact"),
    "acme/retired-benchmark": ("acme/retired-benchmark", "disabled", "exact"),
    "uoft-cs/cifar10": ("uoft-cs/cifar10", "mlgym_overlap:imageClassificationCifar10", "exact"),
    "someone/cifar10-mirror": ("someone/cifar10-mirror", "mlgym_overlap:imageClassificationCifar10", "exact"),
    "someone/fashion-mnist-small": (
        "someone/fashion-mnist-small",
        "mlgym_overlap:imageClassificationFMnist",
        "exact",
    ),
    "acme/does-not-exist": (None, "not_found", None),
    "uci/customer-churn": ("acme/customer-churn", "ok", "search"),
    "mirror/fashion_mnist": (
        "zalando-datasets/fashion_mnist",
        "mlgym_overlap:imageClassificationFMnist",
        "search",
    ),
}


def test_hub_candidates_are_each_decided_by_the_right_rule(tmp_path: Path, hub_online: FakeHubServer) -> None:
    proposals = [_proposal(f"p{i}", [rid]) for i, rid in enumerate(HUB_CASES)]
    ctx, rows = _run(tmp_path, _hub_cfg(hub_online), proposals)
    got = {r.requested_id: (r.dataset_id, r.reason, r.resolved_by) for r in rows}
    assert got == HUB_CASES
    churn = next(r for r in rows if r.requested_id == "acme/customer-churn")
    assert churn.decision is Decision.ACCEPTED
    assert churn.revision == hub_online.datasets["acme/customer-churn"]["sha"]
    assert churn.license == "mit" and churn.n_rows == 7043 and churn.splits == ["train", "test"]
    assert [t.column for t in churn.targets] == ["churn"]
    assert all(r.decision is Decision.REJECTED for r in rows if r.reason != "ok")


def test_hub_funnel_counts_every_candidate_and_names_each_drop(
    tmp_path: Path, hub_online: FakeHubServer
) -> None:
    proposals = [_proposal(f"p{i}", [rid]) for i, rid in enumerate(HUB_CASES)]
    ctx, rows = _run(tmp_path, _hub_cfg(hub_online), proposals)
    report = ctx.report
    assert (report.items_in, report.items_out) == (len(HUB_CASES), 2)
    assert sum(report.drops.values()) == len(HUB_CASES) - 2
    assert (
        report.drops["mlgym_overlap"] == 4 and report.drops["not_found"] == 1 and report.drops["license"] == 2
    )
    assert report.metrics["resolved_by_search"] == 1 and report.metrics["distinct_datasets"] == 1
    assert ctx.tables["verified_datasets"][0]["requested_id"] == "acme/customer-churn"


def test_a_missing_id_is_searched_and_nothing_found_is_not_found(
    tmp_path: Path, hub_online: FakeHubServer
) -> None:
    _, rows = _run(tmp_path, _hub_cfg(hub_online), [_proposal("p", ["acme/does-not-exist"])])
    searches = [q for p, q in hub_online.requests if p == "/api/datasets"]
    assert searches and searches[0]["search"] == ["does-not-exist"]
    assert [(r.dataset_id, r.reason, r.resolved_by) for r in rows] == [(None, "not_found", None)]


def test_the_proposals_target_column_is_recorded_first(tmp_path: Path, hub_online: FakeHubServer) -> None:
    _, rows = _run(tmp_path, _hub_cfg(hub_online), [_proposal("p", ["acme/wine-quality"], target="quality")])
    assert rows[0].reason == "ok" and rows[0].targets[0].column == "quality"
    _, rows = _run(tmp_path / "again", _hub_cfg(hub_online), [_proposal("p", ["acme/wine-quality"])])
    assert rows[0].reason == "no_target"


def test_candidates_are_alternatives_checked_until_one_passes(
    tmp_path: Path, hub_online: FakeHubServer
) -> None:
    candidates = ["acme/gated-clinical-notes", "acme/customer-churn", "acme/wine-quality"]
    ctx, rows = _run(tmp_path, _hub_cfg(hub_online), [_proposal("p", candidates)])
    assert [(r.dataset_id, r.reason) for r in rows] == [
        ("acme/gated-clinical-notes", "gated"),
        ("acme/customer-churn", "ok"),
    ]
    assert ctx.report.metrics["candidates_unchecked"] == 1
    assert not hub_online.paths("/api/datasets/acme/wine-quality")


def test_two_candidates_resolving_to_one_dataset_keep_one(tmp_path: Path, hub_online: FakeHubServer) -> None:
    cfg = _hub_cfg(hub_online)
    cfg.dataset_filter.max_accepted_per_proposal = 0
    _, rows = _run(tmp_path, cfg, [_proposal("p", ["acme/customer-churn", "other/customer-churn"])])
    assert [(r.dataset_id, r.reason) for r in rows] == [
        ("acme/customer-churn", "ok"),
        ("acme/customer-churn", "duplicate"),
    ]


def test_a_hub_failure_stops_the_stage_and_a_rerun_resumes(tmp_path: Path, hub_online: FakeHubServer) -> None:
    cfg = _hub_cfg(hub_online)
    proposals = [_proposal("a", ["acme/customer-churn"]), _proposal("b", ["acme/tiny-survey"])]
    hub_online.failing.add("acme/tiny-survey")
    with pytest.raises(HubError, match="acme/tiny-survey"):
        _run(tmp_path, cfg, proposals)
    assert (tmp_path / "verify" / "items" / "a.json").exists()
    hub_online.failing.clear()
    before = len(hub_online.paths("/api/datasets/acme/customer-churn"))
    _, rows = _run(tmp_path, cfg, proposals)
    assert [r.reason for r in rows] == ["ok", "too_small:40<100 rows"]
    assert len(hub_online.paths("/api/datasets/acme/customer-churn")) == before  # decided item reused


def test_offline_verification_accepts_catalog_datasets_and_finds_them_by_name(
    tmp_path: Path, catalog: Catalog
) -> None:
    cfg = RootConfig()
    cfg.hub.kind, cfg.hub.catalog_dir = "offline", str(catalog.root)
    cfg.dataset_filter.max_accepted_per_proposal = 0
    proposals = [
        _proposal("a", ["sklearn/wine", "uci/wine-recognition"]),
        _proposal("b", ["palmerpenguins/penguins"], target="species"),
        _proposal("c", ["zalando-datasets/fashion_mnist"]),
    ]
    ctx, rows = _run(tmp_path, cfg, proposals)
    got = [(r.requested_id, r.dataset_id, r.reason, r.resolved_by) for r in rows]
    assert got == [
        ("sklearn/wine", "sklearn/wine", "ok", "exact"),
        ("uci/wine-recognition", "sklearn/wine", "duplicate", "search"),
        ("palmerpenguins/penguins", "palmerpenguins/penguins", "ok", "exact"),
        ("zalando-datasets/fashion_mnist", None, "not_found", None),
    ]
    wine = rows[0]
    assert (
        wine.source == "offline"
        and wine.revision.startswith("scikit-learn==")
        and wine.license == "bsd-3-clause"
    )
    assert load_frame(wine).shape == (178, 14)
    assert rows[2].targets[0].column == "species"
    assert ctx.report.metrics["distinct_datasets"] == 2


def test_without_verification_every_candidate_passes_unchecked(
    tmp_path: Path, hub_online: FakeHubServer
) -> None:
    cfg = _hub_cfg(hub_online)
    cfg.dataset_filter.enabled = False
    proposals = [_proposal("a", ["acme/gated-clinical-notes"]), _proposal("b", ["uoft-cs/cifar10"]),
                 _proposal("c", ["acme/does-not-exist"])]  # fmt: skip
    _, rows = _run(tmp_path, cfg, proposals)
    assert [(r.dataset_id, r.decision, r.reason) for r in rows] == [
        ("acme/gated-clinical-notes", Decision.ACCEPTED, "ok:unverified"),
        ("uoft-cs/cifar10", Decision.ACCEPTED, "ok:unverified"),
        ("acme/does-not-exist", Decision.ACCEPTED, "unverified"),
    ]
