"""From a verified dataset to a table: ``load_frame`` and the targets worth predicting."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from stsc.errors import HubError
from stsc.hub.records import ColumnInfo, TargetSpec, TaskType, VerifiedDataset

if TYPE_CHECKING:
    import pandas as pd

TARGET_NAMES = ("label", "labels", "target", "class", "y", "outcome", "score", "price", "rating", "species")


def heuristic_targets(columns: Sequence[ColumnInfo]) -> list[TargetSpec]:
    """Targets guessed from a Hub schema: columns named like a label (``label``, ``target``,
    ``price``, ...), categorical -> classification, float -> regression, int -> classification;
    then every other categorical column (on the Hub, ``category`` means a ``ClassLabel`` feature,
    a label by construction). Nothing else is guessed: a wrong target makes a meaningless task."""
    named, labels = [], []
    for col in columns:
        is_named = col.name.lower() in TARGET_NAMES
        if col.dtype in ("category", "bool"):
            spec = TargetSpec(column=col.name, task_type=TaskType.CLASSIFICATION, n_classes=col.n_unique)
            (named if is_named else labels).append(spec)
        elif is_named and col.dtype in ("int", "float"):
            task = TaskType.REGRESSION if col.dtype == "float" else TaskType.CLASSIFICATION
            named.append(TargetSpec(column=col.name, task_type=task))
    return named + labels


def suggest_targets(record: VerifiedDataset) -> list[TargetSpec]:
    """Targets for a task on ``record``: the curated ones (offline catalog) or those recorded at
    verification, else guessed from its columns. May be empty."""
    return list(record.targets) or heuristic_targets(record.columns)


def nested_columns(frame: pd.DataFrame) -> list[str]:
    """Columns holding lists, arrays or mappings (Hub ``Sequence``, ``Image`` and ``Audio``
    features): not scalar features, and a CSV cell cannot carry them."""
    import numpy as np
    from pandas.api import types as t

    nested = (list, tuple, dict, set, np.ndarray)
    return [
        str(name)
        for name in frame.columns
        if t.is_object_dtype(frame[name]) and frame[name].map(lambda v: isinstance(v, nested)).any()
    ]


def load_frame(record: VerifiedDataset, split: str | None = None) -> pd.DataFrame:
    """The dataset of ``record`` as a DataFrame, at the verified revision.

    Offline catalog: the exported parquet (``record.local_path``). Hub: ``datasets.load_dataset``
    at ``record.revision``, config ``record.config_name`` (the one verification described; a
    dataset of several configs loads none without it), split ``split`` (default: ``train`` if
    present, else the first split).
    Raises ``HubError`` when the data cannot be read.
    """
    if record.source == "offline":
        import pandas as pd

        if not record.local_path or not Path(record.local_path).exists():
            raise HubError(
                f"catalog file {record.local_path!r} of {record.dataset_id} is missing; rerun the "
                "verify stage (it re-exports the catalog)"
            )
        return pd.read_parquet(record.local_path)
    if record.dataset_id is None:
        raise HubError(f"proposal {record.proposal_id}: no dataset was found, nothing to load")
    split = split or ("train" if "train" in record.splits or not record.splits else record.splits[0])
    import datasets

    config = f" config {record.config_name}" if record.config_name else ""
    try:
        ds = datasets.load_dataset(
            record.dataset_id, record.config_name, revision=record.revision, split=split
        )
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise HubError(f"cannot load {record.dataset_id}@{record.revision}{config} split {split}: {e}") from e
    return ds.to_pandas()
