"""Fixtures of the hub room: the fake Hub API server and a shared exported catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from stsc.hub.catalog import Catalog
from tests.fakes.hub_server import hub_online, hub_server  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The offline catalog, exported once per test session to a temporary folder."""
    root: Path = tmp_path_factory.mktemp("catalog")
    cat = Catalog(root)
    cat.export()
    return cat
