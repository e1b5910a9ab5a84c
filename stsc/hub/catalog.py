"""The offline catalog: bundled tables (``catalog_specs``) exported once to parquet, searchable
through the same ``DatasetSource`` interface as the Hub.

Layout under the catalog folder (default ``<store>/catalog``)::

    <group>/<name>.parquet   # the table
    <group>/<name>.json      # {"fingerprint", "meta": DatasetMeta}, written last: marks a complete export

An export is reused while the package version (the revision, ``<distribution>==<version>``) and the
spec's fingerprint are unchanged, so exporting is idempotent and safe to interrupt; files are
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from stsc.errors import ConfigError, DatasetNotFoundError, HubError
from stsc.hub.catalog_specs import GROUPS, SPECS, CatalogSpec
from stsc.hub.records import ColumnInfo, DatasetMeta
from stsc.hub.text import jaccard, tokens
from stsc.store import atomic_write_json, read_json, to_jsonable

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

_IMPORT_NAME = {"scikit-learn": "sklearn"}
MAX_CATEGORY_LEVELS = 50  # string columns with more distinct values are "text"
EXPORT_FORMAT = 1  # bump when a loader's output changes, so existing exports are redone


def describe_columns(df: pd.DataFrame) -> list[ColumnInfo]:
    """One ``ColumnInfo`` per column, with the coarse dtype vocabulary of ``ColumnInfo.dtype``."""
    from pandas.api import types as t

    out = []
    for name in df.columns:
        col = df[name]
        n_unique = int(col.nunique(dropna=True))
        if t.is_bool_dtype(col):
            dtype = "bool"
        elif t.is_integer_dtype(col):
            dtype = "int"
        elif t.is_float_dtype(col):
            dtype = "float"
        elif isinstance(col.dtype, t.CategoricalDtype) or t.is_string_dtype(col) or t.is_object_dtype(col):
            dtype = "category" if n_unique <= MAX_CATEGORY_LEVELS else "text"
        else:
            dtype = "other"
        out.append(ColumnInfo(name=str(name), dtype=dtype, n_unique=n_unique))
    return out


def spec_fingerprint(spec: CatalogSpec) -> str:
    """Hash of a spec's curated fields and ``EXPORT_FORMAT``: an export is redone when it changes."""
    fields = {k: v for k, v in asdict(spec).items() if k != "load"}
    payload = json.dumps([EXPORT_FORMAT, to_jsonable(fields)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Catalog:
    """``DatasetSource`` over the bundled tables of the packages named in ``sources``.

    Raises ``ConfigError`` for an unknown source name; a source whose package is not installed is
    skipped with a warning.
    """

    kind = "offline"

    def __init__(self, root: Path, sources: Sequence[str] = GROUPS):
        unknown = sorted(set(sources) - set(GROUPS))
        if unknown:
            raise ConfigError(f"hub.catalog_sources has unknown {unknown}; choose from {list(GROUPS)}")
        self.root = Path(root)
        self.specs = [s for s in SPECS if s.group in sources and self._installed(s)]
        self._metas: dict[str, DatasetMeta] | None = None

    @staticmethod
    def _installed(spec: CatalogSpec) -> bool:
        if find_spec(_IMPORT_NAME.get(spec.distribution, spec.distribution)) is None:
            logger.warning("catalog source %s is not installed; skipping %s", spec.distribution, spec.id)
            return False
        return True

    def paths(self, dataset_id: str) -> tuple[Path, Path]:
        """(parquet, metadata json) of ``dataset_id`` under the catalog folder."""
        return self.root / f"{dataset_id}.parquet", self.root / f"{dataset_id}.json"

    def export(self) -> list[DatasetMeta]:
        """Export every enabled table not yet exported at its current revision; return all metas."""
        if self._metas is None:
            self._metas = {s.id: self._export_one(s) for s in self.specs}
        return list(self._metas.values())

    def _export_one(self, spec: CatalogSpec) -> DatasetMeta:
        parquet, meta_path = self.paths(spec.id)
        revision = f"{spec.distribution}=={metadata.version(spec.distribution)}"
        fingerprint = spec_fingerprint(spec)
        if meta_path.exists() and parquet.exists():
            stored = read_json(meta_path)
            meta = DatasetMeta.model_validate(stored["meta"])
            if meta.revision == revision and stored.get("fingerprint") == fingerprint:
                return meta.model_copy(update={"local_path": str(parquet.resolve())})
        try:
            df = spec.load()
        except (ImportError, OSError, ValueError) as e:
            raise HubError(f"cannot load catalog dataset {spec.id} from {revision}: {e}") from e
        _write_parquet(df, parquet)
        meta = DatasetMeta(
            id=spec.id,
            revision=revision,
            license=spec.license,
            licenses=[spec.license],
            license_note=spec.license_note,
            title=spec.title,
            description=spec.description,
            tags=sorted({*spec.areas, *spec.keywords}),
            size_bytes=parquet.stat().st_size,
            n_rows=len(df),
            splits=["train"],
            columns=describe_columns(df),
            targets=list(spec.targets),
            source="offline",
            local_path=str(parquet.resolve()),
            areas=list(spec.areas),
        )
        atomic_write_json(meta_path, {"fingerprint": fingerprint, "meta": meta.model_dump(mode="json")})
        logger.info("exported catalog dataset %s (%d rows) to %s", spec.id, len(df), parquet)
        return meta

    def entries(self) -> list[DatasetMeta]:
        """Every enabled dataset's metadata (exporting on first use)."""
        return self.export()

    def info(self, dataset_id: str) -> DatasetMeta:
        """Metadata of exactly ``dataset_id`` (e.g. ``"sklearn/wine"``); raises ``DatasetNotFoundError``."""
        for meta in self.export():
            if meta.id == dataset_id:
                return meta
        raise DatasetNotFoundError(
            f"{dataset_id!r} is not in the offline catalog; available: {[m.id for m in self.export()]}"
        )

    def search(self, query: str, limit: int) -> list[str]:
        """Ids ranked by word overlap of ``query`` with each dataset's id, title, areas and keywords
        (description words count half); datasets sharing no word are left out."""
        q = tokens(query)
        scored = []
        for meta in self.export():
            strong = tokens(f"{meta.id} {meta.title} {' '.join(meta.tags)}")
            score = len(q & strong) + 0.5 * len(q & (tokens(meta.description) - strong))
            if score > 0:
                scored.append((-score, -jaccard(q, strong), meta.id))
        return [dataset_id for *_, dataset_id in sorted(scored)[: max(limit, 0)]]
