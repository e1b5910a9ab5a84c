"""From a verified dataset to a DataFrame, and the targets a task generator should predict."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from stsc.config import DatasetFilterConfig, HubConfig
from stsc.errors import HubError
from stsc.hub import load_frame, suggest_targets
from stsc.hub.catalog import Catalog
from stsc.hub.frames import heuristic_targets
from stsc.hub.huggingface import HuggingFaceSource
from stsc.hub.records import ColumnInfo, Decision, Proposal, TaskType, VerifiedDataset
from stsc.hub.verify import Verifier
from tests.fakes.hub_server import FakeHubServer


def _record(catalog: Catalog, dataset_id: str) -> VerifiedDataset:
    meta = catalog.info(dataset_id)
    return VerifiedDataset(
        proposal_id="p", topic_id="t", requested_id=dataset_id, dataset_id=meta.id, revision=meta.revision,
        columns=meta.columns, source="offline", local_path=meta.local_path, targets=meta.targets,
        decision=Decision.ACCEPTED, reason="ok",
    )  # fmt: skip


def test_load_frame_reads_the_catalog_table(catalog: Catalog) -> None:
    frame = load_frame(_record(catalog, "sklearn/breast_cancer"))
    assert frame.shape == (569, 31)
    assert set(frame["diagnosis"]) == {"malignant", "benign"}


def test_load_frame_names_the_fix_when_the_catalog_file_is_gone(catalog: Catalog) -> None:
    record = _record(catalog, "sklearn/iris").model_copy(update={"local_path": "/nonexistent/iris.parquet"})
    with pytest.raises(HubError, match="rerun the verify stage"):
        load_frame(record)


def test_catalog_targets_are_suggested_with_their_leaking_columns(catalog: Catalog) -> None:
    targets = suggest_targets(_record(catalog, "vega_datasets/cars"))
    assert [(t.column, t.task_type) for t in targets] == [
        ("miles_per_gallon", TaskType.REGRESSION),
        ("origin", TaskType.CLASSIFICATION),
    ]
    assert targets[1].exclude_features == ["name"]


def test_targets_are_guessed_from_a_hub_schema_when_none_were_recorded() -> None:
    columns = [
        ColumnInfo(name="text", dtype="text"),
        ColumnInfo(name="topic", dtype="category", n_unique=4),
        ColumnInfo(name="price", dtype="float"),
        ColumnInfo(name="year", dtype="int"),
    ]
    guessed = heuristic_targets(columns)
    assert [(t.column, t.task_type) for t in guessed] == [
        ("price", TaskType.REGRESSION),
        ("topic", TaskType.CLASSIFICATION),
    ]
    record = VerifiedDataset(
        proposal_id="p", topic_id="t", requested_id="a/b", dataset_id="a/b", columns=columns,
        decision=Decision.ACCEPTED, reason="ok",
    )  # fmt: skip
    assert suggest_targets(record) == guessed


def test_loading_a_hub_dataset_while_offline_raises_hub_error() -> None:
    record = VerifiedDataset(
        proposal_id="p", topic_id="t", requested_id="acme/customer-churn", dataset_id="acme/customer-churn",
        revision="a" * 40, splits=["train", "test"], decision=Decision.ACCEPTED, reason="ok",
    )  # fmt: skip
    with pytest.raises(HubError, match="acme/customer-churn@a{40} split train"):
        load_frame(record)


def _repository_copy(root: Path, data: dict) -> None:
    """The files of the Hub repository ``data`` describes: its card (the ``configs`` and
    ``dataset_info`` the Hub serves) and one parquet file per config and split, with the rows
    and columns the card declares."""
    card = {k: data["cardData"][k] for k in ("license", "configs", "dataset_info")}
    repo = root / data["id"]
    repo.mkdir(parents=True)
    (repo / "README.md").write_text(f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n# {data['id']}\n")
    for info in data["cardData"]["dataset_info"]:
        names = [f["name"] for f in info["features"]]
        for split in info["splits"]:
            n = split["num_examples"]
            rows = {names[0]: [f"s{i % 7}" for i in range(n)], names[1]: [i / 10 for i in range(n)]}
            rows |= {names[2]: [15.0 + i % 20 for i in range(n)], names[3]: [i % 3 for i in range(n)]}
            path = repo / info["config_name"] / f"{split['name']}-00000-of-00001.parquet"
            path.parent.mkdir(exist_ok=True)
            pd.DataFrame(rows).to_parquet(path, index=False)


def test_a_dataset_of_several_configs_loads_the_config_verification_described(
    hub_online: FakeHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = HuggingFaceSource.from_config(HubConfig(kind="huggingface", endpoint=hub_online.url))
    proposal = Proposal(
        id="p", topic_id="t", topic_title="Air", area="tabular", task_idea="Predict the air quality.",
        dataset_candidates=["acme/city-air-quality"], metric="accuracy", higher_is_better=True, source="test",
    )  # fmt: skip
    [record] = Verifier(source, DatasetFilterConfig()).proposal(proposal)
    assert record.decision is Decision.ACCEPTED and record.config_name == "berlin"  # no default: the first
    assert [c.name for c in record.columns] == ["station", "no2", "temperature", "air_quality"]
    # datasets reads a local folder named like the repository before asking the Hub: a copy of the
    # repository's files stands in for the download, and datasets resolves its configs itself.
    _repository_copy(tmp_path, hub_online.datasets["acme/city-air-quality"])
    monkeypatch.chdir(tmp_path)
    frame = load_frame(record)
    assert list(frame.columns) == [c.name for c in record.columns] and len(frame) == 1200
    assert load_frame(record, split="test").shape == (300, 4)
