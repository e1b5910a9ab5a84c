"""The offline catalog: real bundled tables exported once to parquet, searchable like the Hub."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from stsc.config import DatasetFilterConfig, HubConfig
from stsc.errors import ConfigError, DatasetNotFoundError
from stsc.hub.catalog import Catalog
from stsc.hub.catalog_specs import SPECS
from stsc.hub.rules import judge
from stsc.hub.source import DatasetSource, make_source


def test_the_catalog_exports_at_least_twelve_real_tables(catalog: Catalog) -> None:
    metas = catalog.entries()
    assert len(metas) >= 12 and len({m.id for m in metas}) == len(metas)
    for meta in metas:
        frame = pd.read_parquet(meta.local_path)
        assert len(frame) == meta.n_rows >= 100
        assert [c.name for c in meta.columns] == list(frame.columns)
        assert meta.targets and all(t.column in frame.columns for t in meta.targets)
        assert meta.revision and "==" in meta.revision and meta.license


def test_exported_rows_are_the_packages_data(catalog: Catalog) -> None:
    from sklearn.datasets import load_wine

    wine = pd.read_parquet(catalog.info("sklearn/wine").local_path)
    raw = load_wine()
    assert wine.shape == (178, 14)
    assert (wine["alcohol"].to_numpy() == raw.data[:, 0]).all()
    assert sorted(wine["cultivar"].unique()) == ["class_0", "class_1", "class_2"]
    penguins = pd.read_parquet(catalog.info("palmerpenguins/penguins").local_path)
    assert set(penguins["species"].dropna()) == {"Adelie", "Chinstrap", "Gentoo"}


def test_metadata_records_the_package_version_and_licence(catalog: Catalog) -> None:
    wine = catalog.info("sklearn/wine")
    assert wine.revision == f"scikit-learn=={metadata.version('scikit-learn')}"
    assert wine.license == "bsd-3-clause" and "UCI" in (wine.license_note or "")
    assert catalog.info("palmerpenguins/penguins").license == "cc0-1.0"
    stored = json.loads(Path(catalog.paths("sklearn/wine")[1]).read_text())
    assert stored["meta"]["revision"] == wine.revision and stored["fingerprint"]


def test_every_catalog_dataset_passes_the_default_filter(catalog: Catalog) -> None:
    verdicts = {m.id: judge(m, DatasetFilterConfig()).reason for m in catalog.entries()}
    assert set(verdicts.values()) == {"ok"}, verdicts


def test_export_is_idempotent(catalog: Catalog) -> None:
    files = sorted(catalog.root.rglob("*.*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    again = Catalog(catalog.root).export()
    assert sorted(catalog.root.rglob("*.*")) == files
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert [m.id for m in again] == [m.id for m in catalog.entries()]
    assert not list(catalog.root.rglob(".*.tmp"))


def test_an_export_from_another_package_version_is_redone(tmp_path: Path) -> None:
    cat = Catalog(tmp_path, sources=["palmerpenguins"])
    meta = cat.export()[0]
    parquet, meta_path = cat.paths(meta.id)
    stored = json.loads(meta_path.read_text())
    stored["meta"]["revision"] = "palmerpenguins==0.0.1"
    meta_path.write_text(json.dumps(stored))
    parquet.write_bytes(b"not parquet")
    fresh = Catalog(tmp_path, sources=["palmerpenguins"]).info(meta.id)
    assert fresh.revision == meta.revision
    assert len(pd.read_parquet(parquet)) == 344


def test_search_ranks_by_shared_words(catalog: Catalog) -> None:
    assert catalog.search("wine", 3)[0] == "sklearn/wine"
    assert catalog.search("uci-wine-quality", 3)[0] == "sklearn/wine"
    assert catalog.search("penguins", 1) == ["palmerpenguins/penguins"]
    assert set(catalog.search("hourly temperature", 5)[:2]) == {
        "vega_datasets/seattle_temps",
        "vega_datasets/sf_temps",
    }
    assert catalog.search("fashion_mnist", 5) == []


def test_info_of_an_unknown_id_lists_the_available_ones(catalog: Catalog) -> None:
    with pytest.raises(DatasetNotFoundError, match="sklearn/wine"):
        catalog.info("uci/wine")


def test_catalog_sources_select_packages_and_unknown_names_fail(tmp_path: Path) -> None:
    assert {m.id.split("/")[0] for m in Catalog(tmp_path, sources=["sklearn"]).entries()} == {"sklearn"}
    with pytest.raises(ConfigError, match="statsmodels"):
        Catalog(tmp_path, sources=["statsmodels"])


def test_make_source_puts_the_catalog_under_the_store_by_default(tmp_path: Path) -> None:
    source = make_source(HubConfig(kind="offline", catalog_sources=["palmerpenguins"]), tmp_path)
    assert isinstance(source, DatasetSource) and source.kind == "offline"
    assert source.info("palmerpenguins/penguins").local_path == str(
        (tmp_path / "catalog" / "palmerpenguins" / "penguins.parquet").resolve()
    )


def test_specs_cover_classification_and_regression() -> None:
    kinds = {t.task_type.value for s in SPECS for t in s.targets}
    assert kinds == {"classification", "regression"}


def test_an_export_from_an_older_spec_is_redone(tmp_path: Path) -> None:
    cat = Catalog(tmp_path, sources=["palmerpenguins"])
    meta = cat.export()[0]
    _, meta_path = cat.paths(meta.id)
    stored = json.loads(meta_path.read_text())
    stored["fingerprint"], stored["meta"]["tags"] = "0" * 16, ["outdated"]
    meta_path.write_text(json.dumps(stored))
    assert "outdated" not in Catalog(tmp_path, sources=["palmerpenguins"]).info(meta.id).tags
