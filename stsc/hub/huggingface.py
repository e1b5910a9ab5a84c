"""``DatasetSource`` on the Hugging Face Hub, through the real ``huggingface_hub.HfApi``.

``meta_from_hub`` turns the Hub's dataset JSON (or a ``DatasetInfo``) into ``DatasetMeta``: licences
from ``license:*`` tags and the card, row bounds from ``size_categories``, the config to load from
the card's ``configs``, schema and split sizes from the card's ``dataset_info`` of that config,
byte size from the card or the file listing, and the revision sha.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from stsc.config import HubConfig
from stsc.errors import DatasetNotFoundError, HubError
from stsc.hub.frames import heuristic_targets
from stsc.hub.records import ColumnInfo, DatasetMeta

logger = logging.getLogger(__name__)

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_BOUND = re.compile(r"^(\d+)([KMBT]?)$")
_INT = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_FLOAT = ("float16", "float32", "float64", "bfloat16", "double", "float")


def _count(text: str) -> int:
    m = _BOUND.match(text.strip())
    if not m:
        raise ValueError(text)
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_size_category(tag: str) -> tuple[int, int | None] | None:
    """``"10K<n<100K"`` -> ``(10000, 100000)``, ``"n<1K"`` -> ``(0, 1000)``, ``"n>1T"`` ->
    ``(10**12, None)``; ``None`` for anything else (e.g. ``"unknown"``)."""
    tag = tag.removeprefix("size_categories:").strip()
    try:
        if tag.startswith("n<"):
            return 0, _count(tag[2:])
        if tag.startswith("n>"):
            return _count(tag[2:]), None
        lo, n, hi = tag.split("<")
        if n.strip() == "n":
            return _count(lo), _count(hi)
    except ValueError:
        return None
    return None


def _feature_dtype(feature: dict[str, Any]) -> tuple[str, int | None]:
    dtype = feature.get("dtype")
    if isinstance(dtype, dict) and "class_label" in dtype:
        names = (dtype["class_label"] or {}).get("names") or {}
        return "category", len(names) or None
    if "class_label" in feature:
        return "category", len((feature["class_label"] or {}).get("names") or {}) or None
    if dtype in _INT:
        return "int", None
    if dtype in _FLOAT:
        return "float", None
    if dtype in ("string", "large_string"):
        return "text", None
    if dtype == "bool":
        return "bool", None
    return "other", None


def config_name(card: dict[str, Any]) -> str | None:
    """The config ``datasets.load_dataset`` should load: of the card's ``configs``, the one marked
    ``default: true`` or named ``default``, else the first listed; ``None`` when the card lists none
    (the repository's files then form the dataset's only config)."""
    configs = [c for c in card.get("configs") or [] if isinstance(c, dict) and c.get("config_name")]
    default = [c for c in configs if c.get("default") or c["config_name"] == "default"]
    chosen = (default or configs or [{}])[0]
    return str(chosen["config_name"]) if chosen else None


def _card_info(card: dict[str, Any], config: str | None) -> dict[str, Any]:
    """The card's ``dataset_info`` of ``config``, else of the default (or first) config, or ``{}``."""
    info = card.get("dataset_info") or {}
    if isinstance(info, list):
        named = [c for c in info if isinstance(c, dict) and config and c.get("config_name") == config]
        default = [c for c in info if isinstance(c, dict) and c.get("config_name") in (None, "default")]
        info = (named or default or info or [{}])[0]
    return info if isinstance(info, dict) else {}


def _licenses(tags: list[str], card: dict[str, Any]) -> list[str]:
    found = [t.split(":", 1)[1] for t in tags if t.startswith("license:")]
    card_license = card.get("license")
    found += [card_license] if isinstance(card_license, str) else list(card_license or [])
    return list(dict.fromkeys(str(x).strip().lower() for x in found if x))


def _row_bounds(tags: list[str], card: dict[str, Any]) -> tuple[int, int | None] | None:
    cats = [t for t in tags if t.startswith("size_categories:")]
    card_cats = card.get("size_categories")
    cats += [card_cats] if isinstance(card_cats, str) else list(card_cats or [])
    bounds = [b for b in map(parse_size_category, cats) if b is not None]
    if not bounds:
        return None
    hi = None if any(b[1] is None for b in bounds) else max(b[1] for b in bounds)
    return min(b[0] for b in bounds), hi


def meta_from_hub(data: Any) -> DatasetMeta:
    """``DatasetMeta`` from a ``huggingface_hub.DatasetInfo`` or the Hub's raw JSON object."""
    if isinstance(data, dict):
        from huggingface_hub.hf_api import DatasetInfo

        data = DatasetInfo(**data)
    tags = list(data.tags or [])
    card = data.card_data.to_dict() if data.card_data is not None else {}
    config = config_name(card)
    info = _card_info(card, config)
    columns = []
    for feature in info.get("features") or []:
        dtype, n_unique = _feature_dtype(feature)
        columns.append(ColumnInfo(name=str(feature.get("name")), dtype=dtype, n_unique=n_unique))
    splits = info.get("splits") or []
    n_rows = sum(int(s.get("num_examples") or 0) for s in splits) or None
    sibling_bytes = sum(s.size or 0 for s in data.siblings or [])
    size_bytes = info.get("dataset_size") or info.get("download_size") or sibling_bytes or data.used_storage
    licenses = _licenses(tags, card)
    return DatasetMeta(
        id=data.id,
        revision=data.sha,
        license=licenses[0] if licenses else None,
        licenses=licenses,
        title=str(card.get("pretty_name") or data.id),
        description=str(data.description or card.get("pretty_name") or ""),
        tags=tags,
        size_bytes=int(size_bytes) if size_bytes else None,
        n_rows=n_rows,
        n_rows_bounds=_row_bounds(tags, card),
        config_name=config,
        splits=[str(s.get("name")) for s in splits],
        columns=columns,
        targets=heuristic_targets(columns),
        downloads=data.downloads,
        gated=bool(data.gated),
        private=bool(data.private),
        disabled=bool(data.disabled),
        source="huggingface",
    )


class HuggingFaceSource:
    """``DatasetSource`` backed by ``huggingface_hub.HfApi`` (any endpoint: the Hub, a mirror, a fake)."""

    kind = "huggingface"

    def __init__(self, api: Any, timeout_s: float = 30.0):
        self.api = api
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, cfg: HubConfig) -> HuggingFaceSource:
        """Client for ``cfg.endpoint`` with the token read from the env var ``cfg.token_env``."""
        from huggingface_hub import HfApi

        token = os.environ.get(cfg.token_env) or None
        return cls(HfApi(endpoint=cfg.endpoint, token=token), timeout_s=cfg.timeout_s)

    def info(self, dataset_id: str) -> DatasetMeta:
        """See ``DatasetSource.info``. Gated and disabled repos the Hub refuses to describe come back
        as a minimal ``DatasetMeta`` with the flag set, so the verdict can name the rule."""
        import httpx2
        from huggingface_hub import errors

        try:
            info = self.api.dataset_info(dataset_id, files_metadata=True, timeout=self.timeout_s)
        except errors.GatedRepoError:
            return DatasetMeta(id=dataset_id, gated=True)
        except errors.DisabledRepoError:
            return DatasetMeta(id=dataset_id, disabled=True)
        except (errors.RepositoryNotFoundError, errors.HFValidationError) as e:
            raise DatasetNotFoundError(f"dataset {dataset_id!r} not found on the Hub") from e
        except errors.HfHubHTTPError as e:
            if e.response is not None and e.response.status_code == 404:
                raise DatasetNotFoundError(f"dataset {dataset_id!r} not found on the Hub") from e
            raise HubError(f"Hub lookup of {dataset_id!r} failed: {e}") from e
        except errors.OfflineModeIsEnabled as e:
            raise HubError(_OFFLINE_HINT) from e
        except (httpx2.HTTPError, OSError) as e:
            raise HubError(f"Hub lookup of {dataset_id!r} failed: {e}") from e
        return meta_from_hub(info)

    def search(self, query: str, limit: int) -> list[str]:
        """See ``DatasetSource.search``: the Hub's own ranking (substring match on ids)."""
        import httpx2
        from huggingface_hub import errors

        try:
            return [d.id for d in self.api.list_datasets(search=query, limit=limit)]
        except errors.OfflineModeIsEnabled as e:
            raise HubError(_OFFLINE_HINT) from e
        except (httpx2.HTTPError, OSError) as e:
            raise HubError(f"Hub search for {query!r} failed: {e}") from e


_OFFLINE_HINT = (
    "HF_HUB_OFFLINE is set, so the Hub cannot be queried: unset it, or use the bundled catalog "
    "with hub=offline"
)
