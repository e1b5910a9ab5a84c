"""The verdict on one candidate dataset: the filter rules of ``dataset_filter``, applied the same
way to every source, and decontamination against the datasets of the 13 MLGym-Bench tasks.

Rules run in a fixed order and the first that fails decides, so every rejection names exactly one
rule (``Verdict.reason`` is ``"<rule>"`` or ``"<rule>:<detail>"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from stsc.config import DatasetFilterConfig
from stsc.hub.records import DatasetMeta
from stsc.hub.text import STOPWORDS, compact, jaccard


class Rule(StrEnum):
    OK = "ok"
    NOT_FOUND = "not_found"
    DISABLED = "disabled"
    PRIVATE = "private"
    GATED = "gated"
    BLOCKLISTED = "blocklisted"
    MLGYM_OVERLAP = "mlgym_overlap"
    MLGYM_NEAR_DUPLICATE = "mlgym_near_duplicate"
    LICENSE = "license"
    LOW_DOWNLOADS = "low_downloads"
    TOO_LARGE = "too_large"
    TOO_SMALL = "too_small"
    NO_SCHEMA = "no_schema"
    NO_TARGET = "no_target"
    NO_REVISION = "no_revision"
    DUPLICATE = "duplicate"  # a second candidate of one proposal resolving to the same dataset


@dataclass(frozen=True)
class Verdict:
    rule: Rule
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.rule is Rule.OK

    @property
    def reason(self) -> str:
        return f"{self.rule}:{self.detail}" if self.detail else str(self.rule)


_PIECE = re.compile(r"[a-z]+|[0-9]+")
_CAMEL = re.compile(r"([a-z])([A-Z])")
MIN_COMPACT_KEY = 6  # shorter names ("coco", "ames") only match as whole words
_UNKNOWN_LICENSES = frozenset({"unknown", "other", "none", ""})


def name_tokens(text: str) -> frozenset[str]:
    """Words of a dataset name with letters and digits split (``"cifar10-mirror"`` -> cifar, 10,
    mirror), plural ``s`` removed and stopwords dropped."""
    words = _PIECE.findall(_CAMEL.sub(r"\1 \2", text).lower())
    stem = [
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")) else w for w in words
    ]
    return frozenset(w for w in stem if w not in STOPWORDS)


@dataclass(frozen=True)
class MlgymDataset:
    """One dataset behind an MLGym-Bench task: its known Hub ids, the names it goes by, and the
    distinctive words a near-duplicate must share with one of those names (``car`` alone must not
    make ``cars`` a copy of MountainCar)."""

    task: str
    ids: tuple[str, ...]
    names: tuple[str, ...]
    distinctive: frozenset[str]

    @property
    def keys(self) -> list[frozenset[str]]:
        return [name_tokens(n) for n in self.names]

    def named_in(self, name: str) -> bool:
        """Whether ``name`` (a dataset id's name part) holds one of this dataset's names, as words
        or, for names of at least ``MIN_COMPACT_KEY`` characters, run together (``fashionmnist``)."""
        words, joined = name_tokens(name), compact(name)
        for key, raw in zip(self.keys, self.names, strict=True):
            glued = compact(raw)
            if key <= words:
                return True
            if len(glued) >= MIN_COMPACT_KEY and re.search(rf"{re.escape(glued)}(?![0-9])", joined):
                return True
        return False


def _ds(task: str, ids: tuple[str, ...], names: tuple[str, ...], distinctive: str) -> MlgymDataset:
    return MlgymDataset(task, ids, names, frozenset(distinctive.split()))


# reference/mlgym.md §5: datasets the synthetic tasks must not reuse.
MLGYM_DATASETS: tuple[MlgymDataset, ...] = (
    _ds("imageClassificationCifar10", ("uoft-cs/cifar10", "cifar10"), ("cifar10",), "cifar"),
    _ds(
        "imageClassificationFMnist",
        ("zalando-datasets/fashion_mnist", "fashion_mnist"),
        ("fashion mnist", "fmnist"),
        "mnist fmnist",
    ),
    _ds("naturalLanguageInferenceMNLI", ("nyu-mll/multi_nli", "multi_nli"), ("multi nli", "mnli"), "mnli"),
    _ds("imageCaptioningCOCO", ("detection-datasets/coco",), ("coco", "mscoco"), "coco mscoco"),
    _ds(
        "languageModelingFineWeb",
        ("huggingfacefw/fineweb", "huggingfacefw/fineweb-edu"),
        ("fineweb",),
        "fineweb",
    ),
    _ds("regressionKaggleHousePrice", (), ("house price", "ames housing", "ames"), "ames"),
    _ds("titanic", (), ("titanic",), "titanic"),
    _ds("rlBreakoutMinAtar", (), ("minatar", "breakout minatar"), "minatar"),
    _ds("rlMetaMazeMisc", (), ("metamaze", "meta maze"), "metamaze maze"),
    _ds("rlMountainCarContinuous", (), ("mountaincar", "mountain car"), "mountaincar"),
    _ds("gymnax", (), ("gymnax",), "gymnax"),
    _ds("3SATTime", (), ("3sat",), ""),
    _ds("battleOfSexes", (), ("battle of the sexes",), "sexe"),
    _ds("prisonersDilemma", (), ("prisoners dilemma",), "dilemma"),
    _ds("blotto", (), ("blotto",), "blotto"),
)


def mlgym_conflict(dataset_id: str, threshold: float) -> Verdict | None:
    """Overlap of ``dataset_id`` with an MLGym-Bench dataset, or ``None``.

    ``mlgym_overlap``: a known id, or the name part holds every word of one of the dataset's names
    (``someone/cifar10-mirror``, ``user/fashion-mnist-small``). ``mlgym_near_duplicate``: the name's
    word-set Jaccard with one of those names reaches ``threshold`` and they share a distinctive word
    (``foo/cifar``, ``mnist``).
    """
    lowered = dataset_id.lower()
    raw_name = dataset_id.rsplit("/", 1)[-1]
    name = name_tokens(raw_name)
    for ds in MLGYM_DATASETS:
        if lowered in ds.ids or ds.named_in(raw_name):
            return Verdict(Rule.MLGYM_OVERLAP, ds.task)
    for ds in MLGYM_DATASETS:
        for key in ds.keys:
            if key & name & ds.distinctive and jaccard(set(key), set(name)) >= threshold:
                return Verdict(Rule.MLGYM_NEAR_DUPLICATE, ds.task)
    return None


def _license_verdict(meta: DatasetMeta, cfg: DatasetFilterConfig) -> Verdict | None:
    licenses = set(meta.licenses or ([meta.license] if meta.license else []))
    if not licenses - _UNKNOWN_LICENSES:
        return None if cfg.allow_unknown_license else Verdict(Rule.LICENSE, "unknown")
    allowed = {x.lower() for x in cfg.license_allowlist}
    refused = sorted(x for x in licenses - _UNKNOWN_LICENSES if x not in allowed)
    if not cfg.allow_unknown_license:  # every declared licence must be known and allowed
        refused += sorted(licenses & _UNKNOWN_LICENSES)
    return Verdict(Rule.LICENSE, ",".join(refused)) if refused else None


def _size_verdict(meta: DatasetMeta, cfg: DatasetFilterConfig) -> Verdict | None:
    if meta.size_bytes is not None and meta.size_bytes > cfg.max_size_bytes:
        return Verdict(Rule.TOO_LARGE, f"{meta.size_bytes}B>{cfg.max_size_bytes}B")
    if meta.n_rows is not None:
        if meta.n_rows < cfg.min_rows:
            return Verdict(Rule.TOO_SMALL, f"{meta.n_rows}<{cfg.min_rows} rows")
        if meta.n_rows > cfg.max_rows:
            return Verdict(Rule.TOO_LARGE, f"{meta.n_rows}>{cfg.max_rows} rows")
    elif meta.n_rows_bounds is not None:
        lo, hi = meta.n_rows_bounds
        if hi is not None and hi <= cfg.min_rows:
            return Verdict(Rule.TOO_SMALL, f"<{hi} rows")
        if lo >= cfg.max_rows:
            return Verdict(Rule.TOO_LARGE, f">{lo} rows")
    return None


def _access_verdict(meta: DatasetMeta, cfg: DatasetFilterConfig) -> Verdict | None:
    if meta.disabled:
        return Verdict(Rule.DISABLED)
    if meta.private:
        return Verdict(Rule.PRIVATE)
    if meta.gated and not cfg.allow_gated:
        return Verdict(Rule.GATED)
    blocked = {b.lower() for b in cfg.blocklist}
    if meta.id.lower() in blocked or meta.id.lower().rsplit("/", 1)[-1] in blocked:
        return Verdict(Rule.BLOCKLISTED)
    return None


def judge(
    meta: DatasetMeta, cfg: DatasetFilterConfig, requested_id: str | None = None, target: str | None = None
) -> Verdict:
    """The verdict on ``meta`` under ``cfg``. ``requested_id`` (what the proposal named) is checked
    for MLGym overlap too; ``target`` (the proposal's column) makes a schema usable when present.
    Unknown downloads (offline catalog) pass ``min_downloads``. With ``cfg.enabled`` false (the
    no-verification ablation) every dataset that was found passes."""
    if not cfg.enabled:
        return Verdict(Rule.OK, "unverified")
    verdict = _access_verdict(meta, cfg)
    if verdict is None and cfg.decontaminate:
        for name in dict.fromkeys([meta.id, requested_id or meta.id]):
            verdict = verdict or mlgym_conflict(name, cfg.near_duplicate_threshold)
    verdict = verdict or _license_verdict(meta, cfg)
    if verdict is None and meta.downloads is not None and meta.downloads < cfg.min_downloads:
        verdict = Verdict(Rule.LOW_DOWNLOADS, f"{meta.downloads}<{cfg.min_downloads}")
    verdict = verdict or _size_verdict(meta, cfg)
    if verdict is None and cfg.require_columns:
        if not meta.columns:
            verdict = Verdict(Rule.NO_SCHEMA)
        elif not meta.targets and target not in {c.name for c in meta.columns}:
            verdict = Verdict(Rule.NO_TARGET, target or "")
    if verdict is None and not meta.revision:
        verdict = Verdict(Rule.NO_REVISION)
    return verdict or Verdict(Rule.OK)
