"""``generator=llm``: the generator model writes each task, and fixes it when validation fails.

The model sees the topic, the proposal's task idea and the dataset's schema and first rows
(prompt ``generator.prompt``, default ``conf/prompts/generate_task.j2``) and answers with one JSON
object (``GeneratedTask``): name, task type, target, priority metric and direction, metric bounds,
the agent-facing description, field docs of the data, and three files: ``prepare.py`` (run by
``validate`` in a sandbox next to ``raw/data.csv`` to write the split data, the sample submission
and the private labels), ``baseline.py`` and ``evaluate.py``. Output that does not parse or breaks
the task contract is dropped with reason ``malformed_output``. With ``generator.public_fraction``
above 0 the contract also asks evaluate.py to honour a public split of the test rows: the build
draws the public ids after prepare.py ran, and validation checks that the split is honoured.

``fix`` (prompt ``generator.fix_prompt``) sends the current files and the failure report and takes
back ``{"files": {...}}`` with the changed files only.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from stsc.config import GeneratorConfig
from stsc.errors import ModelOutputError
from stsc.sandbox.base import SCORE_SPLIT_ENV
from stsc.synth.generate import GenerationResult, GenerationSource, SourceDrop
from stsc.synth.propose import extract_json
from stsc.synth.task import (
    BUILD,
    PRIVATE_ENV,
    STARTER_CODE,
    WORKSPACE,
    DatasetConfig,
    TaskConfig,
    TaskDraft,
    TaskMeta,
    description_problems,
    load_task,
    slug,
)
from stsc.synth.template import PUBLIC_IDS, item_seed

if TYPE_CHECKING:
    import pandas as pd

    from stsc.llm import LLMClient
    from stsc.synth.checks import Failure
    from stsc.synth.validate import FixResult

log = logging.getLogger(__name__)

# Model-facing file names -> their place in the task folder.
TASK_FILES = {
    "prepare.py": f"{BUILD}/prepare.py",
    "baseline.py": f"{WORKSPACE}/baseline.py",
    "evaluate.py": f"{WORKSPACE}/evaluate.py",
}
RAW_FILE = "raw/data.csv"
HEAD_ROWS = 5
MAX_CELL = 200  # characters of one cell shown in the prompt


class GeneratedTask(BaseModel):
    """The generator model's answer. Unknown keys are ignored; every listed key is required."""

    model_config = ConfigDict(extra="ignore")
    name: str
    task_type: str
    target: str
    metric: str
    higher_is_better: bool
    metric_bounds: tuple[float | None, float | None] | None
    description: str
    dataset_description: str
    files: dict[str, str]

    @field_validator("files")
    @classmethod
    def _three_files(cls, files: dict[str, str]) -> dict[str, str]:
        missing = sorted(set(TASK_FILES) - set(files))
        unknown = sorted(set(files) - set(TASK_FILES))
        if missing or unknown:
            raise ValueError(
                f"files must be exactly {sorted(TASK_FILES)}; missing {missing}, unknown {unknown}"
            )
        empty = [name for name, text in files.items() if not text.strip()]
        if empty:
            raise ValueError(f"files {empty} are empty")
        return files

    @field_validator("description")
    @classmethod
    def _mlgym_description(cls, text: str) -> str:
        problems = description_problems(text)
        if problems:
            raise ValueError("; ".join(problems))
        return text


def parse_generated_task(text: str) -> GeneratedTask:
    """Parse the generation answer; raises ``ModelOutputError`` naming what is wrong."""
    data = extract_json(text)  # stsc.synth.propose: fences, <think> blocks and stray text aside
    if not isinstance(data, dict):
        raise ModelOutputError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return GeneratedTask.model_validate(data)
    except ValidationError as e:
        raise ModelOutputError(f"the task JSON does not match the expected fields: {e}") from e


def parse_fix(text: str) -> dict[str, str]:
    """Parse a fix answer ``{"files": {name: content}}``; names among ``TASK_FILES``. Raises
    ``ModelOutputError``."""
    data = extract_json(text)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not files:
        raise ModelOutputError(
            'expected {"files": {"<file name>": "<new content>", ...}} with at least one file'
        )
    unknown = sorted(set(files) - set(TASK_FILES))
    bad = sorted(k for k, v in files.items() if not isinstance(v, str) or not v.strip())
    if unknown or bad:
        raise ModelOutputError(
            f"fix may only change {sorted(TASK_FILES)} with non-empty text; got unknown {unknown}, empty {bad}"
        )
    return files


def _head_csv(frame: pd.DataFrame) -> str:
    """The first rows as CSV, long cells cut so a text column cannot flood the prompt."""
    head = frame.head(HEAD_ROWS).astype(str).map(lambda v: v if len(v) <= MAX_CELL else v[:MAX_CELL] + "...")
    return head.to_csv(index=False)


class LLMTaskGenerator:
    """``TaskGenerator`` (one source per proposal/dataset pair) and ``TaskFixer`` backed by a model."""

    per = "proposal"

    def __init__(self, cfg: GeneratorConfig, client: LLMClient, seed: int):
        self.cfg = cfg
        self.client = client
        self.seed = seed
        self.name = f"llm:{cfg.llm.model}"

    @classmethod
    def from_config(
        cls, cfg: GeneratorConfig, store: Path, seed: int, spent_usd: float = 0.0
    ) -> LLMTaskGenerator:
        """A generator whose ``generator.llm.budget_usd`` is what is left after ``spent_usd`` (the
        spend of earlier runs of the stage)."""
        from stsc.llm import LLMClient

        budget = cfg.llm.budget_usd
        left = None if budget is None else max(0.0, budget - spent_usd)
        return cls(cfg, LLMClient(cfg.llm, cache_dir=Path(store) / "llm_cache", budget_usd=left), seed)

    def _ask(self, template: str, salt: str | None = None, **variables: Any) -> tuple[Any, Any]:
        from stsc.prompts import render

        prompt = render(template, **variables)
        completion = self.client.complete(
            [{"role": "user", "content": prompt.text}], meta=prompt.meta, cache_salt=salt
        )
        return prompt, completion

    def generate(self, source: GenerationSource) -> GenerationResult:
        """One draft for ``source``, or a ``malformed_output`` drop; columns of lists or mappings are
        left out of the table. Raises ``HubError`` when the table cannot be loaded, ``LLMError``
        when the model cannot be reached."""
        from stsc.hub.frames import load_frame, nested_columns

        frame = load_frame(source.record)
        nested = nested_columns(frame)
        if nested:  # a CSV cell cannot carry lists or mappings (Hub Sequence, Image features)
            log.info("generate: %s: leaving out columns of lists or mappings: %s", source.key, nested)
            frame = frame.drop(columns=nested)
        keep = max(1e-9, 1.0 - self.cfg.valid_fraction - self.cfg.test_fraction)
        cap = int(self.cfg.max_train_rows / keep) + 1
        raw = frame.sample(n=min(cap, len(frame)), random_state=item_seed(self.seed, source.key) % 2**31)
        record = source.record
        prompt, completion = self._ask(
            self.cfg.prompt, topic_title=source.topic_title, area=source.area, task_idea=source.task_idea,
            metric_hint=source.metric_hint or "", dataset_id=record.dataset_id, revision=record.revision,
            license=record.license, dataset_description=record.description, n_rows=len(frame), n_raw=len(raw),
            columns=[{"name": str(c), "dtype": str(frame[c].dtype), "n_unique": int(frame[c].nunique())} for c in frame.columns],
            targets=[t.model_dump(mode="json") for t in source.targets], head_csv=_head_csv(raw),
            raw_file=RAW_FILE, training_timeout=self.cfg.training_timeout_s, private_env=PRIVATE_ENV,
            public_split=self.cfg.public_fraction > 0, split_env=SCORE_SPLIT_ENV, public_ids=PUBLIC_IDS,
        )  # fmt: skip
        result = GenerationResult(
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
            cost_usd=completion.cost_usd, prompt_sha256=prompt.sha256,
        )  # fmt: skip
        try:
            spec = parse_generated_task(completion.text)
        except ModelOutputError as e:
            result.drops.append(SourceDrop("malformed_output", str(e)))
            return result
        result.drafts.append(self._draft(source, spec, raw.to_csv(index=False), result))
        return result

    def _draft(
        self, source: GenerationSource, spec: GeneratedTask, raw_csv: str, usage: GenerationResult
    ) -> TaskDraft:
        record = source.record
        dataset_id = record.dataset_id or record.requested_id
        suffix = hashlib.sha256(source.key.encode()).hexdigest()[:6]
        task_id = f"{slug(dataset_id, 30)}-{slug(spec.name, 30)}-{suffix}"
        ds_name = f"{slug(dataset_id, 30).replace('-', '_')}_{suffix}"
        files: dict[str, bytes | str] = {TASK_FILES[n]: text for n, text in spec.files.items()}
        files[f"{BUILD}/{RAW_FILE}"] = raw_csv
        provenance = f"Source: {dataset_id} (revision {record.revision}); licence: {record.license}."
        config = TaskConfig(
            id=task_id, name=spec.name, description=spec.description, dataset_configs=[f"datasets/{ds_name}.yaml"],
            training_timeout=self.cfg.training_timeout_s,
            starter_code=list(STARTER_CODE),
        )  # fmt: skip
        dataset = DatasetConfig(
            name=ds_name,
            description=f"{spec.dataset_description.strip()}\n{provenance}",
            data_path=f"{WORKSPACE}/data",
        )
        meta = TaskMeta(
            task_id=task_id, topic_id=source.topic_id, topic_title=source.topic_title, area=source.area,
            dataset_id=dataset_id, dataset_revision=record.revision, license=record.license,
            task_type=spec.task_type, target=spec.target, metric=spec.metric, higher_is_better=spec.higher_is_better,
            metric_bounds=spec.metric_bounds, generator=self.name,
            public_split=self.cfg.public_fraction > 0, public_fraction=self.cfg.public_fraction,
            tokens=usage.prompt_tokens + usage.completion_tokens, cost_usd=usage.cost_usd,
        )  # fmt: skip
        return TaskDraft(config=config, datasets=[dataset], meta=meta, files=files)

    def fix(self, folder: Path, failure: Failure, attempt: int) -> FixResult:
        """Fixed files for the task in ``folder`` (see ``TaskFixer``). A malformed answer comes back
        as ``FixResult.error``; ``LLMError`` propagates."""
        from stsc.synth.validate import FixResult

        task = load_task(folder)
        current = {
            n: (folder / rel).read_text(encoding="utf-8")
            for n, rel in TASK_FILES.items()
            if (folder / rel).is_file()
        }
        prompt, completion = self._ask(
            self.cfg.fix_prompt, salt=f"{task.task_id}:fix:{attempt}", name=task.config.name,
            description=task.config.description, task_type=task.meta.task_type, target=task.meta.target,
            metric=task.meta.metric, higher_is_better=task.meta.higher_is_better, files=current,
            failure=failure.report(), attempt=attempt, raw_file=RAW_FILE,
            training_timeout=task.config.training_timeout, private_env=PRIVATE_ENV,
            public_split=task.meta.public_split, split_env=SCORE_SPLIT_ENV, public_ids=PUBLIC_IDS,
        )  # fmt: skip
        result = FixResult(
            prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
            cost_usd=completion.cost_usd, prompt_sha256=prompt.sha256,
        )  # fmt: skip
        try:
            result.files = {TASK_FILES[n]: text for n, text in parse_fix(completion.text).items()}
        except ModelOutputError as e:
            result.error = str(e)
        return result
