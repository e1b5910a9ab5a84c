"""Records exchanged by the synthesis stages (topics -> proposals -> verified datasets).

All are frozen pydantic models with a schema version, written one per JSONL row.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = SCHEMA_VERSION


class Topic(Record):
    """One research topic (``topics`` stage)."""

    id: str
    area: str
    title: str
    description: str
    source: str  # "curated" | "llm:<model>"


class SubmissionType(StrEnum):
    CSV = "csv"  # predictions file scored by evaluate.py (MLGym CSVSubmissionTasks)


class Proposal(Record):
    """A task idea for one topic with candidate datasets (``propose`` stage)."""

    id: str
    topic_id: str
    topic_title: str
    area: str
    task_idea: str
    dataset_candidates: list[str]
    target: str | None = None  # column to predict, when known
    metric: str
    higher_is_better: bool
    submission_type: SubmissionType = SubmissionType.CSV
    source: str  # "catalog" | "llm:<model>"


class ColumnInfo(Record):
    name: str
    dtype: str  # "int" | "float" | "category" | "text" | "bool" | "other"
    n_unique: int | None = None


class TaskType(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class TargetSpec(Record):
    """A column worth predicting and how (catalog curation or Hub schema heuristics)."""

    column: str
    task_type: TaskType
    n_classes: int | None = None  # classification only
    note: str = ""  # why this target makes sense, shown to task generators
    exclude_features: list[str] = Field(default_factory=list)  # columns that leak this target


class DatasetMeta(Record):
    """What a dataset source knows about one dataset, normalised across the Hub and the catalog.

    ``n_rows_bounds`` is ``(lo, hi)`` from a Hub ``size_categories`` tag when the exact row count is
    unknown. ``license`` is lower-case SPDX-like (``"mit"``, ``"cc0-1.0"``), ``None`` when undeclared.
    """

    id: str
    revision: str | None = None
    license: str | None = None
    licenses: list[str] = Field(default_factory=list)  # every declared licence (all must be allowed)
    license_note: str | None = None
    title: str = ""
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    size_bytes: int | None = None
    n_rows: int | None = None
    n_rows_bounds: tuple[int, int | None] | None = None
    config_name: str | None = None  # Hub config (subset) described and loaded; None = the only one
    splits: list[str] = Field(default_factory=list)
    columns: list[ColumnInfo] = Field(default_factory=list)
    targets: list[TargetSpec] = Field(default_factory=list)
    downloads: int | None = None
    gated: bool = False
    private: bool = False
    disabled: bool = False
    source: str = "huggingface"  # "huggingface" | "offline"
    local_path: str | None = None  # offline catalog: parquet file
    areas: list[str] = Field(default_factory=list)  # offline catalog: research areas it serves


class Decision(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class VerifiedDataset(Record):
    """Outcome of checking one candidate dataset (``verify`` stage). Rejected rows are kept too, so
    every drop carries its rule in ``reason``."""

    proposal_id: str
    topic_id: str
    requested_id: str  # what the proposal named
    dataset_id: str | None  # what was found (exact id, or the search hit); None if nothing
    revision: str | None = None  # Hub commit sha, or "<package>==<version>" for the offline catalog
    license: str | None = None
    size_bytes: int | None = None
    n_rows: int | None = None
    config_name: str | None = None  # Hub config (subset) to load; None = the dataset's own default
    splits: list[str] = Field(default_factory=list)
    columns: list[ColumnInfo] = Field(default_factory=list)
    downloads: int | None = None
    gated: bool = False
    private: bool = False
    source: str = "huggingface"  # "huggingface" | "offline"
    local_path: str | None = None  # parquet file of the offline catalog
    description: str = ""
    license_note: str | None = None  # provenance of the data behind the distribution licence
    resolved_by: str | None = None  # "exact" | "search" | None (nothing found)
    targets: list[TargetSpec] = Field(default_factory=list)  # suggested prediction targets
    decision: Decision
    reason: str  # rule that decided: "ok", "not_found", "gated", "license:<x>", "mlgym_overlap:<task>", ...
