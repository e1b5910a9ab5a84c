"""The Hub source with the real huggingface_hub client against the loopback fake Hub."""

from __future__ import annotations

import copy

import pytest

from stsc.config import HubConfig
from stsc.errors import DatasetNotFoundError, HubError
from stsc.hub.huggingface import HuggingFaceSource, meta_from_hub
from stsc.hub.source import DatasetSource, make_source
from tests.fakes.hub_server import FakeHubServer, load_hub_datasets


def _source(server: FakeHubServer) -> HuggingFaceSource:
    return HuggingFaceSource.from_config(HubConfig(kind="huggingface", endpoint=server.url, timeout_s=5.0))


def test_make_source_builds_a_hub_client_for_the_configured_endpoint(
    hub_online: FakeHubServer, tmp_path
) -> None:
    source = make_source(HubConfig(kind="huggingface", endpoint=hub_online.url), tmp_path)
    assert isinstance(source, DatasetSource) and source.kind == "huggingface"
    assert source.info("acme/customer-churn").id == "acme/customer-churn"


def test_info_returns_the_datasets_metadata_with_its_revision_sha(hub_online: FakeHubServer) -> None:
    meta = _source(hub_online).info("acme/customer-churn")
    assert meta.revision == hub_online.datasets["acme/customer-churn"]["sha"]
    assert meta.license == "mit" and meta.downloads == 1520 and meta.n_rows == 7043
    assert "/api/datasets/acme/customer-churn" in hub_online.paths()


def test_a_missing_dataset_raises_not_found(hub_online: FakeHubServer) -> None:
    with pytest.raises(DatasetNotFoundError, match="acme/nothing-here"):
        _source(hub_online).info("acme/nothing-here")


def test_a_disabled_repository_is_reported_as_disabled_not_as_an_error(hub_online: FakeHubServer) -> None:
    meta = _source(hub_online).info("acme/retired-benchmark")
    assert meta.disabled


def test_gated_and_private_flags_come_through(hub_online: FakeHubServer) -> None:
    source = _source(hub_online)
    assert source.info("acme/gated-clinical-notes").gated
    assert source.info("acme/private-ledger").private


def test_search_returns_matching_ids_most_downloaded_first(hub_online: FakeHubServer) -> None:
    assert _source(hub_online).search("cifar", limit=5) == [
        "uoft-cs/cifar10",
        "someone/cifar",
        "someone/cifar10-mirror",
    ]
    assert _source(hub_online).search("cifar", limit=1) == ["uoft-cs/cifar10"]
    assert _source(hub_online).search("no-such-words", limit=5) == []


def test_search_follows_the_hubs_pagination_links(hub_online: FakeHubServer) -> None:
    hub_online.page_size = 2
    hits = _source(hub_online).search("acme", limit=100)
    assert len(hits) == sum(i.startswith("acme/") for i in hub_online.datasets)
    assert sum(p == "/api/datasets" for p in hub_online.paths()) > 1


def test_a_server_error_raises_hub_error(hub_online: FakeHubServer) -> None:
    hub_online.failing.add("acme/customer-churn")
    with pytest.raises(HubError, match="acme/customer-churn"):
        _source(hub_online).info("acme/customer-churn")


def test_offline_mode_raises_a_hub_error_that_says_how_to_proceed(hub_server: FakeHubServer) -> None:
    # tests run with HF_HUB_OFFLINE=1; without the hub_online fixture the client refuses to connect
    with pytest.raises(HubError, match="hub=offline"):
        _source(hub_server).info("acme/customer-churn")
    assert hub_server.paths() == []


def test_the_token_is_read_from_the_configured_environment_variable(hub_online, monkeypatch) -> None:
    monkeypatch.setenv("STSC_TEST_HUB_TOKEN", "hf_secret")
    source = HuggingFaceSource.from_config(
        HubConfig(kind="huggingface", endpoint=hub_online.url, token_env="STSC_TEST_HUB_TOKEN")
    )
    assert source.api.token == "hf_secret"


def test_the_config_marked_default_is_recorded_with_its_own_schema() -> None:
    data = copy.deepcopy(next(d for d in load_hub_datasets() if d["id"] == "acme/city-air-quality"))
    assert meta_from_hub(data).config_name == "berlin"  # none marked: the first listed
    data["cardData"]["configs"][1]["default"] = True
    meta = meta_from_hub(data)
    assert meta.config_name == "paris"
    assert [c.name for c in meta.columns] == ["station", "pm10", "temperature", "air_quality"]
    del data["cardData"]["configs"]  # the repository's files form its only config
    assert meta_from_hub(data).config_name is None
