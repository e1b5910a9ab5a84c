"""The dataset-source protocol and its factory.

A ``DatasetSource`` answers two questions about datasets, whatever stands behind it (the Hugging
Face Hub, the offline catalog of bundled tables, a fake in tests): what is known about one id, and
which ids match a free-text query. Verification (``stsc.hub.rules``) only ever sees ``DatasetMeta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from stsc.config import HubConfig
from stsc.errors import ConfigError
from stsc.hub.records import DatasetMeta

KINDS = ("huggingface", "offline")


@runtime_checkable
class DatasetSource(Protocol):
    """Where datasets are looked up. ``kind`` is ``"huggingface"`` or ``"offline"``."""

    kind: str

    def info(self, dataset_id: str) -> DatasetMeta:
        """Metadata of exactly ``dataset_id``.

        Raises ``DatasetNotFoundError`` when the id does not exist, ``HubError`` when the source
        cannot answer (network, server error, offline mode).
        """
        ...

    def search(self, query: str, limit: int) -> list[str]:
        """Up to ``limit`` dataset ids matching ``query``, best first (may be empty).

        Raises ``HubError`` when the source cannot answer.
        """
        ...


def make_source(cfg: HubConfig, store: Path) -> DatasetSource:
    """Build the source named by ``cfg.kind``; the offline catalog lives in ``cfg.catalog_dir`` or
    ``<store>/catalog`` and is exported there on first use. Raises ``ConfigError`` for an unknown kind."""
    if cfg.kind == "huggingface":
        from stsc.hub.huggingface import HuggingFaceSource

        return HuggingFaceSource.from_config(cfg)
    if cfg.kind == "offline":
        from stsc.hub.catalog import Catalog

        return Catalog(catalog_dir(cfg, store), sources=cfg.catalog_sources)
    raise ConfigError(f"hub.kind={cfg.kind!r} is not valid; choose one of {list(KINDS)}")


def catalog_dir(cfg: HubConfig, store: Path) -> Path:
    """Folder of the offline catalog: ``hub.catalog_dir`` or ``<store>/catalog``."""
    return Path(cfg.catalog_dir).expanduser().resolve() if cfg.catalog_dir else Path(store) / "catalog"
