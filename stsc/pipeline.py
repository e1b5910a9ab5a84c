"""Stage registry, ordering, content keys, caching and resume.

A stage's output folder is ``<store>/<stage>/<key>/`` where ``key`` hashes the stage's own config
subtree (minus keys that cannot change results: concurrency, credentials' env-var names, ...), the
sources of the prompt templates it renders and the keys of its upstream stages. Same key -> cache
hit, the stage is skipped; changed config or prompt -> that stage and everything downstream get new
keys and rerun, nothing upstream does. A folder is complete once ``_SUCCESS.json`` exists; an
incomplete one is handed back to its stage, which resumes from the items already written. ``force``
drops the marker first, then moves the folder aside and deletes it, so a kill mid-delete never leaves
a truncated folder that looks complete; in a ``-m`` sweep it recomputes each stage key once, not once
per job. Secret-named config values (API keys, tokens, URL passwords) enter keys and ``stage.json``
only as a placeholder.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stsc.config import RootConfig
from stsc.errors import ConfigError, StageError
from stsc.store import REPORT_FILE, SUCCESS_FILE, StageContext, StageReport, atomic_write_json, read_json
from stsc.tracking import is_secret_key, redact_url_credentials

log = logging.getLogger(__name__)

StageFn = Callable[[RootConfig, StageContext], None]

# Config keys (by last component) that never change a stage's results and so stay out of its key.
KEY_EXCLUDE_NAMES = frozenset(
    {
        "concurrency",
        "llm_concurrency",
        "sandbox_concurrency",
        "step_turns",
        "api_key_env",
        "token_env",
        "max_retries",
        "backoff_s",
        "trace",
        "catalog_dir",
        "endpoint",
        "cache",
        "workdir",
        "docker_host",
        "infra_backoff_s",
        "progress_interval_s",
        "bundles",
        "max_infra_retries",
        "dataset_num_proc",
        "main_process_port",
    }
)
# Under a sweep's folder: one empty file per stage key a job of the sweep has forced.
FORCED_DIR = ".stsc-forced"
# What a secret-named config value (``teacher.llm.extra.api_key``) contributes to keys and stage.json.
SECRET_PLACEHOLDER = "<secret>"


@dataclass(frozen=True)
class StageSpec:
    """One node of the stage graph.

    ``fn`` is a callable or a ``"module:function"`` path imported only when the stage runs;
    ``config`` lists the dotted config keys the stage's key depends on (besides its upstream keys);
    ``prompts`` names the prompt templates the stage renders under a config, as
    ``(prompts_dir or None, template name)`` pairs: their sources are part of its key, so editing
    a template reruns the stages that use it; bump ``version`` when a stage's semantics change so
    old outputs stop matching.
    """

    name: str
    fn: StageFn | str
    after: tuple[str, ...] = ()
    config: tuple[str, ...] = ()
    version: int = 1
    prompts: Callable[[RootConfig], list[tuple[str | None, str]]] | None = None

    def load(self) -> StageFn:
        if callable(self.fn):
            return self.fn
        module, _, attr = self.fn.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Add (or replace) a stage. Upstream stages must be registered first."""
    for up in spec.after:
        if up not in _REGISTRY:
            raise StageError(f"stage '{spec.name}' depends on unknown stage '{up}'")
    _REGISTRY[spec.name] = spec
    return spec


def stage(name: str, after: tuple[str, ...] = (), config: tuple[str, ...] = (), version: int = 1):
    """Decorator form of ``register`` for stage functions defined in code (tests, plugins)."""

    def deco(fn: StageFn) -> StageFn:
        register(StageSpec(name, fn, tuple(after), tuple(config), version))
        return fn

    return deco


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> StageSpec:
    return _REGISTRY[name]


# What a sandbox lets a command do, hence what a stage running untrusted code may produce (paths,
# the engine's address and the host user it maps to change no result).
SANDBOX_LIMITS = tuple(
    f"sandbox.{k}"
    for k in ("backend", "memory_mb", "cpus", "pids_limit", "nofile", "max_file_mb", "cpu_time_s",
              "output_limit_bytes", "network", "image", "gpus", "python")
)  # fmt: skip


def _agent_prompts(cfg: RootConfig) -> list[tuple[str | None, str]]:
    agent = cfg.agent
    names = (
        agent.system_template,
        agent.instance_template,
        agent.next_step_template,
        agent.format_error_template,
    )
    return [(agent.prompts_dir, name) for name in names]


def _topics_prompts(cfg: RootConfig) -> list[tuple[str | None, str]]:
    return [(None, cfg.topics.prompt)] if cfg.topics.expand_with_llm else []


def _propose_prompts(cfg: RootConfig) -> list[tuple[str | None, str]]:
    return [(None, cfg.propose.prompt)] if cfg.propose.kind == "llm" else []


def _generate_prompts(cfg: RootConfig) -> list[tuple[str | None, str]]:
    gen = cfg.generator
    return [(None, gen.prompt), (None, gen.fix_prompt)] if gen.kind == "llm" else []


def _validate_prompts(cfg: RootConfig) -> list[tuple[str | None, str]]:
    return [(None, cfg.generator.fix_prompt)] if cfg.generator.kind == "llm" else []


_PAPER_GRAPH = (
    StageSpec("topics", "stsc.synth.topics:run_topics", (), ("topics",), 3, prompts=_topics_prompts),
    StageSpec(
        "propose",
        "stsc.synth.propose:run_propose",
        ("topics",),
        ("propose", "hub.kind", "hub.catalog_sources"),
        prompts=_propose_prompts,
    ),
    StageSpec("verify", "stsc.hub.verify:run_verify", ("propose",), ("hub", "dataset_filter"), 3),
    StageSpec(
        "generate",
        "stsc.synth.generate:run_generate",
        ("verify", "propose"),
        ("generator",),
        4,
        prompts=_generate_prompts,
    ),
    StageSpec(
        "validate",
        "stsc.synth.validate:run_validate",
        ("generate",),
        ("validate", "generator.llm", *SANDBOX_LIMITS),
        7,
        prompts=_validate_prompts,
    ),
    StageSpec(
        "rollout",
        "stsc.rollout:run_rollout",
        ("validate",),
        ("teacher", "agent", "rollout", "split", *SANDBOX_LIMITS),
        4,
        prompts=_agent_prompts,
    ),
    StageSpec(
        "curate",
        "stsc.curate:run_curate",
        ("rollout", "validate"),
        ("curate", "student", "split", "agent.history"),
        3,
    ),
    StageSpec("sft", "stsc.train.sft:run_sft", ("curate", "rollout", "validate"), ("sft", "student"), 2),
    StageSpec(
        "evaluate",
        "stsc.evaluation.stage:run_evaluate",
        ("validate", "sft"),
        ("eval", "agent", "split", "student", "teacher", *SANDBOX_LIMITS),
        9,
        prompts=_agent_prompts,
    ),
    StageSpec("report", "stsc.report:run_report", ("validate", "rollout", "curate", "evaluate"), (), 4),
)
for _spec in _PAPER_GRAPH:
    register(_spec)


# --------------------------------------------------------------------------------------------------
# Keys


def _select(cfg: RootConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"stage config key '{dotted}' does not exist in the config")
        obj = getattr(obj, part)
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _strip_excluded(value: Any, name: str = "") -> Any:
    if name and is_secret_key(name) and isinstance(value, str) and value:
        return SECRET_PLACEHOLDER  # rotating a key changes no result (numbers: input_cost_per_token)
    if isinstance(value, dict):
        return {k: _strip_excluded(v, str(k)) for k, v in sorted(value.items()) if k not in KEY_EXCLUDE_NAMES}
    if isinstance(value, list):
        return [_strip_excluded(v) for v in value]
    if isinstance(value, str):
        return redact_url_credentials(value)  # a URL's password
    return value


def stage_config(cfg: RootConfig, spec: StageSpec) -> dict[str, Any]:
    """The semantic config a stage's key is computed from (seed included), secrets replaced."""
    subtree = {key: _strip_excluded(_select(cfg, key), key) for key in spec.config}
    subtree["seed"] = cfg.seed
    return subtree


def stage_prompts(cfg: RootConfig, spec: StageSpec) -> dict[str, str]:
    """sha256 of the source of each prompt template the stage renders (``StageSpec.prompts``),
    by name. Raises PromptError for a missing template."""
    if spec.prompts is None:
        return {}
    from stsc.prompts import source_digest

    return {name: source_digest(name, folder) for folder, name in spec.prompts(cfg)}


def compute_keys(cfg: RootConfig) -> dict[str, str]:
    """Content key of every registered stage, in graph order."""
    keys: dict[str, str] = {}
    for name, spec in _REGISTRY.items():
        payload = {
            "stage": name,
            "version": spec.version,
            "config": stage_config(cfg, spec),
            "upstream": {up: keys[up] for up in spec.after},
        }
        prompts = stage_prompts(cfg, spec)
        if prompts:
            payload["prompts"] = prompts
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        keys[name] = hashlib.sha256(blob).hexdigest()[:12]
    return keys


# --------------------------------------------------------------------------------------------------
# Selection


def select_stages(requested: list[str]) -> list[str]:
    """Requested stages in graph order; empty = all. Unknown names fail listing the valid ones."""
    unknown = [s for s in requested if s not in _REGISTRY]
    if unknown:
        raise StageError(f"unknown stage(s) {unknown}; valid stages are {registered()}")
    if not requested:
        return registered()
    return [s for s in _REGISTRY if s in requested]


def descendants(names: list[str]) -> set[str]:
    out = set(names)
    for name, spec in _REGISTRY.items():
        if any(up in out for up in spec.after):
            out.add(name)
    return out


def stage_dir(store: Path, name: str, key: str) -> Path:
    return store / name / key


def is_complete(folder: Path) -> bool:
    """The completion marker and the report it follows are both there."""
    return (folder / SUCCESS_FILE).exists() and (folder / REPORT_FILE).exists()


@contextmanager
def _stage_lock(folder: Path, shared: bool = False) -> Iterator[None]:
    """Serialise two runs computing (or forcing) the same stage key; ``shared``: held by every stage
    reading ``folder`` as its input, so a ``force`` elsewhere waits until no stage reads it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.parent / f".{folder.name}.lock"
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("stage folder %s is in use by another run; waiting for it", folder)
            fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _reading_inputs(spec: StageSpec, keys: dict[str, str], store: Path) -> Iterator[dict[str, Path]]:
    """The complete input folders of ``spec``, held shared while the stage runs."""
    with ExitStack() as held:
        for up in spec.after:
            held.enter_context(_stage_lock(stage_dir(store, up, keys[up]), shared=True))
        yield _inputs(spec, keys, store)


def _move_aside(folder: Path) -> list[Path]:
    """Take a stage folder out of the store crash-safely (call under its lock): drop its completion
    marker, then rename it aside in one step. Returns the folders to delete (leftovers included)."""
    (folder / SUCCESS_FILE).unlink(missing_ok=True)
    if folder.exists():
        folder.rename(folder.parent / f".{folder.name}.deleting-{time.time_ns()}")
    return sorted(folder.parent.glob(f".{folder.name}.deleting-*"))


# --------------------------------------------------------------------------------------------------
# Running


@dataclass
class StageOutcome:
    name: str
    key: str
    folder: Path
    cache_hit: bool
    report: StageReport


def run_pipeline(cfg: RootConfig, tracker: Any = None, sweep_dir: Path | None = None) -> list[StageOutcome]:
    """Run the selected stages in order, skipping cache hits. ``tracker`` is a
    ``stsc.tracking.JobTracker`` (or None); each stage gets a nested run. ``sweep_dir``, for the
    jobs of one ``-m`` sweep, makes ``force`` recompute each stage key once per sweep: the first
    job to force a key leaves a marker there, later jobs sharing the key reuse its result."""
    selected = select_stages(list(cfg.stages))
    unknown_force = [s for s in cfg.force if s not in _REGISTRY]
    if unknown_force:
        raise StageError(f"force={unknown_force} names unknown stage(s); valid stages are {registered()}")
    keys = compute_keys(cfg)
    store = cfg.store_path
    # Every descendant of a forced stage is invalidated up front, selected or not (an unselected one
    # would otherwise be reused later, stale, under its unchanged key), downstream first, and nothing is
    # deleted before all are out of the store: a kill in between never leaves a stale cache hit.
    forced = descendants(list(cfg.force))
    trash: list[Path] = []
    for name in reversed([s for s in registered() if s in forced]):
        folder = stage_dir(store, name, keys[name])
        marker = sweep_dir / FORCED_DIR / f"{name}-{keys[name]}" if sweep_dir is not None else None
        if not folder.exists() and marker is None:
            continue
        with _stage_lock(folder):
            if marker is not None and marker.exists():
                log.info("stage %s: force=%s, key %s already recomputed in this sweep",
                         name, list(cfg.force), keys[name])  # fmt: skip
                continue
            if folder.exists():
                log.info("stage %s: force=%s, recomputing key %s", name, list(cfg.force), keys[name])
                trash += _move_aside(folder)
            if marker is not None:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)
    outcomes: list[StageOutcome] = []
    for name in selected:
        outcomes.append(_run_one(cfg, name, keys, store, tracker))
    return outcomes


def _inputs(spec: StageSpec, keys: dict[str, str], store: Path) -> dict[str, Path]:
    inputs = {}
    for up in spec.after:
        folder = stage_dir(store, up, keys[up])
        if not is_complete(folder):
            raise StageError(
                f"stage '{spec.name}' needs '{up}' (key {keys[up]}), which has not been run with this "
                f"config; add it to stages=[...] or run without stages= to run everything"
            )
        inputs[up] = folder
    return inputs


def _run_one(cfg: RootConfig, name: str, keys: dict[str, str], store: Path, tracker: Any) -> StageOutcome:
    spec = _REGISTRY[name]
    key = keys[name]
    folder = stage_dir(store, name, key)
    with _stage_lock(folder):
        if is_complete(folder):
            report = StageReport.from_dict(read_json(folder / REPORT_FILE))
            log.info("stage %s: cache hit (key %s) -> %s", name, key, folder)
            if tracker is not None:
                tracker.record_stage(
                    name, key, folder, report, cache_hit=True, params=stage_config(cfg, spec)
                )
            return StageOutcome(name, key, folder, True, report)
        with _reading_inputs(spec, keys, store) as inputs:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                folder / "stage.json",
                {
                    "stage": name,
                    "key": key,
                    "config": stage_config(cfg, spec),
                    "prompts": stage_prompts(cfg, spec),
                    "upstream": {u: keys[u] for u in spec.after},
                },
            )
            report = StageReport(stage=name)
            ctx = StageContext(
                name=name, key=key, out_dir=folder, inputs=inputs, store=store, seed=cfg.seed, report=report
            )
            log.info("stage %s: running (key %s) -> %s", name, key, folder)
            fn = spec.load()
            stage_tracker = (
                tracker.start_stage(name, key, params=stage_config(cfg, spec)) if tracker else None
            )
            ctx.tracker = stage_tracker
            t0 = time.perf_counter()
            try:
                fn(cfg, ctx)
            except BaseException as e:
                report.wall_s = time.perf_counter() - t0
                if stage_tracker is not None:
                    status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"  # Ctrl-C, SIGTERM
                    stage_tracker.finish(report, ctx, status=status)
                raise
            report.wall_s = time.perf_counter() - t0
            atomic_write_json(folder / REPORT_FILE, report.to_dict())
            for table, rows in ctx.tables.items():
                atomic_write_json(folder / f"table_{table}.json", rows)
            atomic_write_json(folder / SUCCESS_FILE, {"stage": name, "key": key, "finished": time.time()})
            if stage_tracker is not None:
                stage_tracker.finish(report, ctx, status="FINISHED")
            log.info(
                "stage %s: done in %.1fs: %d in, %d out, drops %s, $%.4f",
                name,
                report.wall_s,
                report.items_in,
                report.items_out,
                dict(report.drops),
                report.cost_usd,
            )
            return StageOutcome(name, key, folder, False, report)
