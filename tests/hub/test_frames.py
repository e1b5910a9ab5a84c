"""From a verified dataset to a DataFrame, and the targets a task generator should predict."""

from __future__ import annotations

import pytest

from stsc.errors import HubError
from stsc.hub import load_frame, suggest_targets
from stsc.hub.catalog import Catalog
from stsc.hub.frames import heuristic_targets
from stsc.hub.records import ColumnInfo, Decision, TaskType, VerifiedDataset


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
