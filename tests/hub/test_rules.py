"""Hub metadata -> verdict: the golden file, each filter rule, and MLGym decontamination."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stsc.config import DatasetFilterConfig
from stsc.hub.huggingface import meta_from_hub, parse_size_category
from stsc.hub.records import ColumnInfo, DatasetMeta, TargetSpec, TaskType
from stsc.hub.rules import Rule, judge, mlgym_conflict
from tests.fakes.hub_server import load_hub_datasets
from tests.hub.record_golden import GOLDEN, verdicts


def test_stored_hub_metadata_gives_the_golden_verdicts() -> None:
    assert verdicts() == json.loads(GOLDEN.read_text())


def test_the_golden_file_covers_every_rejection_rule_the_hub_can_trigger() -> None:
    reasons = {v["reason"].split(":")[0] for v in json.loads(GOLDEN.read_text()).values()}
    expected = {
        "ok", "gated", "private", "disabled", "license", "too_large", "too_small", "no_schema",
        "no_target", "no_revision", "mlgym_overlap", "mlgym_near_duplicate",
    }  # fmt: skip
    assert expected <= reasons


def _good(**changes) -> DatasetMeta:
    base = DatasetMeta(
        id="acme/table",
        revision="a" * 40,
        license="mit",
        licenses=["mit"],
        n_rows=5000,
        downloads=100,
        columns=[ColumnInfo(name="x", dtype="float"), ColumnInfo(name="label", dtype="category", n_unique=2)],
        targets=[TargetSpec(column="label", task_type=TaskType.CLASSIFICATION, n_classes=2)],
    )
    return base.model_copy(update=changes)


def test_a_clean_dataset_is_accepted() -> None:
    verdict = judge(_good(), DatasetFilterConfig())
    assert verdict.accepted and verdict.reason == "ok"


@pytest.mark.parametrize(
    ("changes", "rules", "reason"),
    [
        ({"gated": True}, {}, "gated"),
        ({"gated": True}, {"allow_gated": True}, "ok"),
        ({"licenses": ["mit", "cc-by-nc-4.0"]}, {}, "license:cc-by-nc-4.0"),
        ({"license": None, "licenses": []}, {}, "license:unknown"),
        ({"license": None, "licenses": []}, {"allow_unknown_license": True}, "ok"),
        ({"license": "other", "licenses": ["other"]}, {}, "license:unknown"),
        ({"licenses": ["mit", "other"]}, {}, "license:other"),  # every declared licence counts
        ({"licenses": ["mit", "unknown"]}, {"allow_unknown_license": True}, "ok"),
        ({"downloads": 3}, {"min_downloads": 10}, "low_downloads:3<10"),
        ({"downloads": None}, {"min_downloads": 10}, "ok"),
        ({"n_rows": 50}, {}, "too_small:50<100 rows"),
        ({"n_rows": 20_000_000}, {}, "too_large:20000000>10000000 rows"),
        ({"n_rows": None, "n_rows_bounds": (0, 100)}, {}, "too_small:<100 rows"),
        ({"n_rows": None, "n_rows_bounds": (10_000_000, 100_000_000)}, {}, "too_large:>10000000 rows"),
        ({"n_rows": None, "n_rows_bounds": (0, 1000)}, {}, "ok"),
        ({"size_bytes": 6_000_000_000}, {}, "too_large:6000000000B>5000000000B"),
        ({"columns": []}, {}, "no_schema"),
        ({"columns": []}, {"require_columns": False}, "ok"),
        ({"targets": []}, {}, "no_target"),
        ({"revision": None}, {}, "no_revision"),
        ({}, {"blocklist": ["table"]}, "blocklisted"),
        ({"id": "acme/fashion_mnist"}, {}, "mlgym_overlap:imageClassificationFMnist"),
        ({"id": "acme/fashion_mnist"}, {"decontaminate": False}, "ok"),
    ],
)
def test_each_rule_rejects_with_its_own_reason(changes: dict, rules: dict, reason: str) -> None:
    cfg = dataclasses.replace(DatasetFilterConfig(), **rules)
    assert judge(_good(**changes), cfg).reason == reason


def test_the_proposals_target_column_makes_a_schema_without_suggested_targets_usable() -> None:
    meta = _good(targets=[])
    assert judge(meta, DatasetFilterConfig(), target="x").accepted
    assert judge(meta, DatasetFilterConfig(), target="missing").reason == "no_target:missing"


def test_a_request_for_an_mlgym_dataset_is_rejected_even_when_the_search_found_another_name() -> None:
    verdict = judge(_good(id="someone/image-set"), DatasetFilterConfig(), requested_id="uoft-cs/cifar10")
    assert verdict.rule is Rule.MLGYM_OVERLAP


@pytest.mark.parametrize(
    ("dataset_id", "expected"),
    [
        ("uoft-cs/cifar10", "mlgym_overlap:imageClassificationCifar10"),
        ("someone/cifar10-mirror", "mlgym_overlap:imageClassificationCifar10"),
        ("someone/CIFAR10_augmented", "mlgym_overlap:imageClassificationCifar10"),
        ("someone/cifar", "mlgym_near_duplicate:imageClassificationCifar10"),
        ("zalando-datasets/fashion_mnist", "mlgym_overlap:imageClassificationFMnist"),
        ("user/fashion-mnist-small", "mlgym_overlap:imageClassificationFMnist"),
        ("user/FashionMNIST", "mlgym_overlap:imageClassificationFMnist"),
        ("ylecun/mnist", "mlgym_near_duplicate:imageClassificationFMnist"),
        ("nyu-mll/multi_nli", "mlgym_overlap:naturalLanguageInferenceMNLI"),
        ("someone/coco2017-captions", "mlgym_overlap:imageCaptioningCOCO"),
        ("HuggingFaceFW/fineweb-edu", "mlgym_overlap:languageModelingFineWeb"),
        ("kaggle/house-prices-advanced-regression", "mlgym_overlap:regressionKaggleHousePrice"),
        ("someone/ames-housing", "mlgym_overlap:regressionKaggleHousePrice"),
        ("someone/titanic", "mlgym_overlap:titanic"),
        ("someone/MinAtar-Breakout", "mlgym_overlap:rlBreakoutMinAtar"),
        ("someone/mountain-car-continuous", "mlgym_overlap:rlMountainCarContinuous"),
        ("someone/cifar-100", None),
        ("someone/coconut-prices", None),
        ("vega_datasets/cars", None),
        ("sklearn/digits", None),
        ("someone/california_housing", None),
    ],
)
def test_mlgym_datasets_their_copies_and_near_duplicates_are_detected(
    dataset_id: str, expected: str | None
) -> None:
    verdict = mlgym_conflict(dataset_id, DatasetFilterConfig().near_duplicate_threshold)
    assert (verdict.reason if verdict else None) == expected


@pytest.mark.parametrize(
    ("tag", "bounds"),
    [
        ("size_categories:n<1K", (0, 1000)),
        ("size_categories:1K<n<10K", (1000, 10000)),
        ("10M<n<100M", (10_000_000, 100_000_000)),
        ("n>1T", (10**12, None)),
        ("unknown", None),
    ],
)
def test_size_category_tags_parse_to_row_bounds(tag: str, bounds: tuple | None) -> None:
    assert parse_size_category(tag) == bounds


def test_hub_metadata_is_normalised_from_tags_card_and_files() -> None:
    data = {d["id"]: d for d in load_hub_datasets()}
    churn = meta_from_hub(data["acme/customer-churn"])
    assert churn.revision == data["acme/customer-churn"]["sha"]
    assert churn.license == "mit" and churn.n_rows == 5634 + 1409 and churn.splits == ["train", "test"]
    assert [(c.name, c.dtype) for c in churn.columns] == [
        ("customer_id", "text"), ("tenure", "int"), ("monthly_charges", "float"), ("churn", "category"),
    ]  # fmt: skip
    assert [(t.column, t.task_type, t.n_classes) for t in churn.targets] == [
        ("churn", TaskType.CLASSIFICATION, 2)
    ]
    crawl = meta_from_hub(data["acme/web-crawl-huge"])
    assert crawl.size_bytes == 8 * 2_000_000_000 and crawl.n_rows is None
    assert crawl.n_rows_bounds == (100_000_000, 1_000_000_000)
