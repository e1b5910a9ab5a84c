"""Plain entry point of one training process: ``python -m stsc.train.entry <train_job.json>``.

Started by ``accelerate launch`` on every rank (never Hydra under torchrun): it rebuilds the
validated ``RootConfig`` from the job file, loads the tokenized dataset the stage saved, trains, and
on rank 0 appends metrics to ``metrics.jsonl`` and writes ``train_result.json``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from stsc.config import RootConfig
from stsc.store import JsonlJournal, atomic_write_json
from stsc.train.trainer import MetricSink, TrainJob, train


def root_config_from_dict(data: dict[str, Any]) -> RootConfig:
    """A validated ``RootConfig`` from its JSON form (raises ``ConfigError``)."""
    from omegaconf import OmegaConf

    from stsc.config import to_root_config

    return to_root_config(OmegaConf.merge(OmegaConf.structured(RootConfig), data))


def journal_sink(path: Path) -> MetricSink:
    """A sink appending ``{"key", "value", "step"}`` lines that the stage process forwards."""
    journal = JsonlJournal(path)

    def sink(key: str, value: float, step: int) -> None:
        journal.append({"key": key, "value": value, "step": step})

    return sink


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m stsc.train.entry <train_job.json>\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import datasets

    job = TrainJob.read(Path(args[0]))
    assert job.data_dir is not None, "the stage saves the tokenized dataset before launching"
    cfg = root_config_from_dict(job.config)
    result = train(cfg, job, datasets.load_from_disk(job.data_dir), journal_sink(job.metrics_path))
    if result is not None:
        atomic_write_json(job.result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
