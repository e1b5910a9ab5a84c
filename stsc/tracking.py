"""MLflow tracking: one parent run per ``stsc`` job, one nested child run per stage, one sweep run
above the jobs of a ``-m`` sweep. Every param, tag, artifact and log line passes the secret redactor.

Runs are created with ``MlflowClient`` and explicit run ids (``mlflow.parentRunId`` tags), never the
fluent active-run stack, so nesting works across threads and processes.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from stsc.config import TrackingConfig

log = logging.getLogger(__name__)

SECRET_WORDS = frozenset(
    {"token", "secret", "password", "passwd", "credential", "credentials", "apikey", "authorization"}
)
KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "auth", "encryption", "signing"})
REDACTED = "***REDACTED***"
PARAM_MAX = 6000
SWEEP_RUN_FILE = ".mlflow_sweep_run_id"
# Sweep-run tag: the config keys a ``-m`` sweep varies, comma-separated; its jobs are named after them.
SWEPT_KEYS_TAG = "stsc.swept_keys"
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
RUN_NAME_MAX = 250
TABLE_MAX_ROWS = 5000
# The password of a URL's userinfo: ``postgresql://user:pw@host`` -> ``postgresql://user:***REDACTED***@host``
# (also as Hydra escapes it in overrides: ``http\://user\:pw@host``).
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*\\?://[^/\s:@\\]*)(\\?):[^/\s@]+@")


# --------------------------------------------------------------------------------------------------
# Redaction


def looks_secret(name: str) -> bool:
    """``OPENAI_API_KEY``, ``hf_token``, ``db.password``, ``key`` -> True; ``content_key``,
    ``max_tokens``, ``input_cost_per_token`` (a price), ``api_key_env`` (the *name* of a variable)
    -> False."""
    parts = [p for p in re.split(r"[._\-\s]+", name.lower()) if p]
    if not parts or parts[-1] == "env":
        return False
    if any(
        p in SECRET_WORDS and not (p == "token" and i and parts[i - 1] == "per") for i, p in enumerate(parts)
    ):
        return True
    return any(p == "key" and (i == 0 or parts[i - 1] in KEY_QUALIFIERS) for i, p in enumerate(parts))


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look like secrets (6+ characters long)."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if looks_secret(k) and len(v) >= 6}, key=len, reverse=True)


def known_secrets(extra: list[str] | None = None) -> list[str]:
    """The environment's secret values and ``extra`` ones, longest first (so a secret containing
    another is replaced whole)."""
    return sorted(set(secret_env_values()) | set(extra or []), key=len, reverse=True)


def config_secret_values(obj: Any) -> list[str]:
    """String values held under secret-named keys anywhere in a (nested) config mapping."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if is_secret_key(str(k)) and isinstance(v, str) and len(v) >= 4:
                found.append(v)
            else:
                found += config_secret_values(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            found += config_secret_values(v)
    return found


def redact_url_credentials(text: str) -> str:
    """Replace the password of every ``scheme://user:password@host`` URL in ``text``."""
    return _URL_PASSWORD.sub(rf"\1\2:{REDACTED}@", text)


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    for value in secret_env_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    return redact_url_credentials(text)


def redact_exception(error: BaseException, secrets: list[str] | None = None) -> None:
    """Redact, in place, the arguments of ``error`` and of the errors it was raised from or during,
    so a traceback printed from it (Hydra prints the job's) shows no secret value or URL password."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        args = tuple(
            redact_text(str(a), secrets) if not isinstance(a, int | float) else a for a in current.args
        )
        if [str(a) for a in args] != [str(a) for a in current.args]:
            try:
                current.args = args
            except (AttributeError, TypeError):  # an exception class with read-only args
                pass
            for name in ("message", "msg"):  # exceptions that keep their text in an attribute too
                if isinstance(getattr(current, name, None), str):
                    try:
                        setattr(current, name, redact_text(getattr(current, name), secrets))
                    except (AttributeError, TypeError):
                        pass
        current = current.__cause__ or current.__context__


def redact_overrides(overrides: list[str], secrets: list[str] | None = None) -> str:
    """Hydra overrides joined for display: values of secret-named keys (``+llm.api_key=sk-...``, swept
    ones too) and secret values replaced."""
    out = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        out.append(f"{key}={REDACTED}" if sep and is_secret_key(key.lstrip("+~")) else item)
    return redact_text(" ".join(out), secrets)


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) config key holds a secret, judged by its last component."""
    return looks_secret(key.rsplit(".", 1)[-1])


def redact_mapping(obj: Any, secrets: list[str] | None = None) -> Any:
    """Deep copy of ``obj`` with secret-named keys and secret values replaced."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {
            k: (
                REDACTED if is_secret_key(str(k)) and obj[k] not in (None, "") else redact_mapping(v, secrets)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_mapping(v, secrets) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; values capped at MLflow's 6000 characters."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not obj and prefix:
            out[prefix[:-1]] = "{}"
        return out
    text = json.dumps(obj) if isinstance(obj, (list, tuple)) else str(obj)
    out[prefix[:-1]] = text[:PARAM_MAX]
    return out


class RedactingFilter(logging.Filter):
    """Replaces secret values (environment and config) and URL passwords in every log record, its
    traceback included (installed by the CLI)."""

    def __init__(self, extra_secrets: list[str] | None = None) -> None:
        super().__init__()
        self.secrets = known_secrets(extra_secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage(), self.secrets), None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text once it is set
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info), self.secrets)
        return True


# --------------------------------------------------------------------------------------------------
# Store location


def tracking_uri(cfg: TrackingConfig, root: Path) -> str:
    return cfg.uri or f"sqlite:///{(root / 'mlruns' / 'mlflow.db').resolve()}"


def artifact_location(cfg: TrackingConfig, root: Path) -> str | None:
    """Where a new experiment keeps its artifacts: the configured location, else ``<root>/mlruns/artifacts``
    for local (sqlite, file) tracking, else None, so that a tracking server uses its own artifact store."""
    if cfg.artifact_location:
        return cfg.artifact_location
    uri = tracking_uri(cfg, root)
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("sqlite", "file") or (not scheme and not uri.startswith("databricks")):
        return (root / "mlruns" / "artifacts").resolve().as_uri()
    return None


def make_client(cfg: TrackingConfig, root: Path):
    """An ``MlflowClient`` for the configured store and the experiment's id (created if needed).
    Raises ``ConfigError`` naming ``tracking.uri`` (its password redacted) when the store does not
    answer."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from stsc.errors import ConfigError

    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(cfg, root)
    client = MlflowClient(tracking_uri=uri)
    try:
        exp = client.get_experiment_by_name(cfg.experiment)
    except MlflowException as e:  # its message holds the URL, password included
        raise ConfigError(
            f"cannot reach the MLflow tracking store tracking.uri={redact_url_credentials(uri)}: "
            f"{redact_text(str(e), known_secrets())}; start it, fix tracking.uri or run with tracking=off"
        ) from None
    if exp is not None:
        return client, exp.experiment_id
    try:
        return client, client.create_experiment(
            cfg.experiment, artifact_location=artifact_location(cfg, root)
        )
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        return client, exp.experiment_id


def git_commit(root: Path) -> str:
    """The commit of the checkout stsc's code runs from, else of ``root``'s, else ``unknown``: the
    code decides the results, and ``root`` (where the store lives) is often outside any checkout."""
    return _head_commit(str(Path(__file__).resolve().parents[1])) or _head_commit(str(root)) or "unknown"


@functools.lru_cache(maxsize=8)
def _head_commit(folder: str) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


# --------------------------------------------------------------------------------------------------
# Runs


class StageTracker:
    """The nested run of one stage; ``job`` (the parent ``JobTracker``) also receives the stage's
    final metrics, so the job runs of a sweep can be compared on them."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        secrets: list[str] | None = None,
        job: JobTracker | None = None,
        stage: str = "",
        cache_hit: bool = False,
    ):
        self.client = client
        self.run_id = run_id
        self._secrets = known_secrets() if secrets is None else secrets  # values to redact
        self._job = job
        self._stage = stage
        self._cache_hit = cache_hit

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_metric_name(k), float(v), now, step or 0) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, obj: Any, name: str) -> None:
        text = json.dumps(redact_mapping(obj, self._secrets), indent=2, default=str)
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / name
            p.write_text(text)
            self.client.log_artifact(self.run_id, str(p))

    def finish(self, report: Any, ctx: Any = None, status: str = "FINISHED") -> None:
        """Log the stage's metrics, summary, tables and artifacts, then end the run with ``status``
        (``FAILED`` instead of ``FINISHED`` when the logging itself raises)."""
        try:
            metrics = report.as_metrics()
            self.log_metrics(metrics)
            if self._job is not None:
                self._job.roll_up(self._stage, metrics, self._cache_hit)
            self.log_json(report.to_dict(), "stage_summary.json")
            if ctx is not None:
                for name, rows in ctx.tables.items():
                    if rows:
                        self.log_table(name, rows)
                for path in ctx.artifacts:
                    self.log_artifact(Path(path))
        except BaseException:
            self.client.set_terminated(self.run_id, status="FAILED" if status == "FINISHED" else status)
            raise
        self.client.set_terminated(self.run_id, status=status)

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Log rows as an MLflow table; past ``TABLE_MAX_ROWS`` only the first rows are logged (the
        stage folder in the store keeps the full table)."""
        import pandas as pd

        if len(rows) > TABLE_MAX_ROWS:
            log.info("table %s: logging the first %d of %d rows", name, TABLE_MAX_ROWS, len(rows))
            rows = rows[:TABLE_MAX_ROWS]
        frame = pd.DataFrame(redact_mapping(rows, self._secrets))
        self.client.log_table(self.run_id, data=frame, artifact_file=f"tables/{name}.json")


def _metric_name(key: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", key)


class JobTracker:
    """The parent run of one ``stsc`` job; creates one nested run per stage."""

    def __init__(self, cfg: TrackingConfig, root: Path, extra_secrets: list[str] | None = None):
        self.client, self.experiment_id = make_client(cfg, root)
        self.root = root
        self.run_id: str | None = None
        self._secrets = known_secrets(extra_secrets)
        self._stage_costs: dict[str, tuple[float, bool]] = {}  # stage -> (cost_usd, cache hit)

    def start(
        self,
        run_name: str,
        config: Mapping[str, Any],
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        overrides: list[str] | tuple[str, ...] = (),
    ) -> str:
        """Create the job run. ``overrides`` (the job's command-line overrides) become its
        ``overrides`` tag and description; in a sweep (``parent_run_id``) the ones setting a swept key
        are appended to ``run_name``, so the jobs of one sweep are told apart in the runs list."""
        commit = git_commit(self.root)
        all_tags = {"stsc.kind": "job", "git_commit": commit, **(tags or {})}
        if commit != "unknown":
            all_tags["mlflow.source.git.commit"] = commit  # shown on the run's page
        shown = redact_overrides(list(overrides), self._secrets)
        if overrides:
            all_tags["overrides"] = shown[:5000]
        all_tags.setdefault(NOTE_TAG, f"stsc {shown}".rstrip())
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
            swept = self._swept_keys(parent_run_id)
            varied = [o for o in overrides if _override_key(o) in swept]
            if varied:
                run_name = f"{run_name} {redact_overrides(varied, self._secrets)}"
        run_name = redact_text(run_name, self._secrets)[:RUN_NAME_MAX]
        self.run_id = self._create_run(run_name, all_tags, config)
        return self.run_id

    def _swept_keys(self, sweep_run_id: str) -> set[str]:
        tag = self.client.get_run(sweep_run_id).data.tags.get(SWEPT_KEYS_TAG, "")
        return {k for k in tag.split(",") if k}

    def roll_up(self, stage: str, metrics: Mapping[str, float], cache_hit: bool) -> None:
        """Log a stage's metrics on the job run as ``<stage>.<metric>`` (``evaluate.aup_best.sft``,
        ``curate.items_out``), with ``total_cost_usd`` (its stages, cache hits included),
        ``new_cost_usd`` (the stages it computed) and the tags ``stages`` and ``cached_stages``."""
        from mlflow.entities import RunTag

        assert self.run_id is not None
        self._stage_costs[stage] = (float(metrics.get("cost_usd", 0.0)), cache_hit)
        rolled = {f"{stage}.{k}": v for k, v in metrics.items()}
        rolled["total_cost_usd"] = sum(c for c, _ in self._stage_costs.values())
        rolled["new_cost_usd"] = sum(c for c, hit in self._stage_costs.values() if not hit)
        StageTracker(self.client, self.run_id, self._secrets).log_metrics(rolled)
        cached = [s for s, (_, hit) in self._stage_costs.items() if hit]
        tags = {"stages": ",".join(self._stage_costs), "cached_stages": ",".join(cached) or "-"}
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _create_run(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """A new run with ``tags`` and ``params``; ended ``FAILED`` when its params cannot be logged."""
        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags=_redact_tags(tags, self._secrets)
        )
        try:
            self._log_params(run.info.run_id, params)
        except BaseException:
            self.client.set_terminated(run.info.run_id, status="FAILED")
            raise
        return run.info.run_id

    def _log_params(self, run_id: str, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(redact_mapping(config, self._secrets))
        # a key of a free-form mapping (topics.areas, llm.extra) may hold characters MLflow refuses
        params = [Param(_metric_name(k), v) for k, v in flat.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])

    def log_config_files(self, files: Mapping[str, str]) -> None:
        """Log text files (resolved config, .hydra/*) as artifacts, redacted."""
        assert self.run_id is not None
        with tempfile.TemporaryDirectory() as tmp:
            for rel, text in files.items():
                p = Path(tmp) / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(_redact_yaml_text(text, self._secrets))
            self.client.log_artifacts(self.run_id, tmp, "config")

    def start_stage(
        self,
        name: str,
        key: str,
        params: Mapping[str, Any],
        cache_hit: bool = False,
        tags: Mapping[str, str] | None = None,
    ) -> StageTracker:
        assert self.run_id is not None
        all_tags = {
            "mlflow.parentRunId": self.run_id,
            "stsc.kind": "stage",
            "stage": name,
            "content_key": key,
            "cache_hit": str(cache_hit).lower(),
            "git_commit": git_commit(self.root),
            **(tags or {}),
        }
        run_id = self._create_run(name, all_tags, params)
        return StageTracker(self.client, run_id, self._secrets, job=self, stage=name, cache_hit=cache_hit)

    def record_stage(
        self, name: str, key: str, folder: Path, report: Any, cache_hit: bool, params: Mapping[str, Any]
    ) -> None:
        """A nested run for a cached stage: its stored metrics and tables (``table_<name>.json`` in
        ``folder``), tagged ``cache_hit=true`` and, when this experiment holds the run that computed
        the key, ``computed_in_run`` (its id; its other artifacts are there) and a description
        linking to it."""
        from types import SimpleNamespace

        from stsc.store import read_json

        source = self._computing_run(name, key)
        where = f"[{source}](#/experiments/{self.experiment_id}/runs/{source})" if source else "another run"
        tags = {
            "stage_dir": str(folder),
            NOTE_TAG: f"Cache hit: stage `{name}` (key `{key}`) was computed by {where}; its stored "
            f"metrics and tables are logged again here, its other outputs are in that run and in {folder}.",
        }
        if source:
            tags["computed_in_run"] = source
        st = self.start_stage(name, key, params, cache_hit=cache_hit, tags=tags)
        tables = {p.stem[len("table_") :]: read_json(p) for p in sorted(Path(folder).glob("table_*.json"))}
        st.finish(report, SimpleNamespace(tables=tables, artifacts=[]))

    def _computing_run(self, name: str, key: str) -> str | None:
        """The id of the first finished run of this experiment that computed stage ``name`` at ``key``."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.stage = '{name}' AND tags.content_key = '{key}' AND tags.cache_hit = 'false' "
            "AND attributes.status = 'FINISHED'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0].info.run_id if runs else None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        assert self.run_id is not None
        StageTracker(self.client, self.run_id, self._secrets).log_artifact(path, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def _override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``; ``~c`` -> ``c``."""
    return override.partition("=")[0].lstrip("+~")


def swept_keys(overrides: list[str], sweeper_params: Mapping[str, Any] | None = None) -> list[str]:
    """The keys a ``-m`` sweep varies: overrides with several values (``a=1,2``, ``range(...)``,
    ``choice(...)``) and the keys of ``hydra.sweeper.params`` (a recipe's sweep), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = list(overrides) + [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(items)
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return list(dict.fromkeys(keys))


def _redact_tags(tags: Mapping[str, str], secrets: list[str] | None = None) -> dict[str, str]:
    secrets = secret_env_values() if secrets is None else secrets
    return {k: (REDACTED if is_secret_key(k) else redact_text(str(v), secrets)) for k, v in tags.items()}


def _redact_yaml_text(text: str, secrets: list[str]) -> str:
    """Redact a YAML dump: values of secret-named keys and any secret env value."""
    lines = []
    for line in text.splitlines():
        m = re.match(r"^(\s*-?\s*)([\w.\-]+):\s*(.+)$", line)
        if m and is_secret_key(m.group(2)) and m.group(3).strip() not in ("null", "''", '""'):
            line = f"{m.group(1)}{m.group(2)}: {REDACTED}"
        lines.append(redact_text(line, secrets))
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


# --------------------------------------------------------------------------------------------------
# Sweeps


def read_sweep_run_id(sweep_dir: Path) -> str | None:
    p = Path(sweep_dir) / SWEEP_RUN_FILE
    return p.read_text().strip() if p.exists() else None


class MlflowSweepCallback:
    """Hydra callback: one MLflow run per ``-m`` sweep, created before the jobs fan out (which also
    creates the sqlite store once, so parallel jobs never race on its first migration).

    Hydra skips ``on_multirun_end`` when a job fails (the sweeper re-raises its exception) or the
    sweep is interrupted, so an ``atexit`` hook in the sweeping process ends a sweep run still
    ``RUNNING`` as ``FAILED``, or ``KILLED`` after Ctrl-C or SIGTERM, together with the job and stage
    runs under it still ``RUNNING`` (a parallel launcher kills its workers before they can end them).
    """

    def __init__(self, **_: Any) -> None:
        self._client = None
        self._experiment_id: str | None = None
        self._run_id: str | None = None

    def on_multirun_start(self, config: Any, **_: Any) -> None:
        from omegaconf import OmegaConf

        tcfg = TrackingConfig(**OmegaConf.to_container(config.tracking, resolve=True))
        if not tcfg.enabled:
            return
        root = Path(str(config.root)).resolve()
        self._client, exp_id = make_client(tcfg, root)
        self._experiment_id = exp_id
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        secrets = _secrets_of(config)
        params = OmegaConf.select(config, "hydra.sweeper.params")
        swept = swept_keys(overrides, OmegaConf.to_container(params) if params is not None else None)
        shown = redact_overrides(overrides, secrets)
        run = self._client.create_run(
            exp_id,
            run_name=f"sweep {sweep_dir.name}",
            tags={
                "stsc.kind": "sweep",
                "git_commit": git_commit(root),
                "sweep_dir": str(sweep_dir),
                "overrides": shown[:5000],
                SWEPT_KEYS_TAG: ",".join(swept)[:5000],
                NOTE_TAG: f"stsc -m {shown}\n\nSwept: {', '.join(swept) or '-'}",
            },
        )
        self._run_id = run.info.run_id
        (sweep_dir / SWEEP_RUN_FILE).write_text(self._run_id)
        atexit.register(self._end_at_exit)

    def on_multirun_end(self, config: Any, **_: Any) -> None:
        self._end("FINISHED")

    def _end_at_exit(self) -> None:
        from stsc.interrupts import interrupted

        self._end("KILLED" if interrupted() else "FAILED")

    def _end(self, status: str) -> None:
        """End the sweep run once (the first call wins: ``on_multirun_end`` or the exit hook)."""
        if self._client is None or self._run_id is None:
            return
        run_id, self._run_id = self._run_id, None
        atexit.unregister(self._end_at_exit)
        try:
            if status != "FINISHED":
                _end_running_descendants(self._client, self._experiment_id, run_id, status)
            self._client.set_terminated(run_id, status=status)
        except Exception as e:  # at exit, with the store gone: nothing more to do
            log.warning("could not end the sweep run %s: %s", run_id, e)

    # Hydra calls these too; nothing to do.
    def on_run_start(self, config: Any, **_: Any) -> None: ...
    def on_run_end(self, config: Any, **_: Any) -> None: ...
    def on_job_start(self, config: Any, **_: Any) -> None: ...
    def on_job_end(self, config: Any, job_return: Any, **_: Any) -> None: ...
    def on_compose_config(self, config: Any, **_: Any) -> None: ...


def _end_running_descendants(client: Any, experiment_id: str | None, run_id: str, status: str) -> None:
    """End with ``status`` every run below ``run_id`` (its jobs, their stages) still ``RUNNING``."""
    parents = [run_id]
    while parents:
        parent = parents.pop()
        running = client.search_runs(
            [experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent}' AND attributes.status = 'RUNNING'",
            max_results=10_000,
        )
        for run in running:
            client.set_terminated(run.info.run_id, status=status)
            parents.append(run.info.run_id)


# Hydra's basic launcher prints each sweep job's overrides ("\t#0 : key=value ...") on this logger.
_LAUNCHER_LOGGER = "hydra._internal.core_plugins.basic_launcher"


class _OverrideLineFilter(logging.Filter):
    """Redacts the overrides of the launcher's '#N : key=value ...' lines (secret-named keys and
    secret values); installed before the root handlers' ``RedactingFilter`` exists."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        head, sep, overrides = record.getMessage().rpartition(" : ")
        if sep:
            record.msg, record.args = head + sep + redact_overrides(overrides.split(" "), self.secrets), None
        return True


class SecretRedactionCallback:
    """Hydra callback keeping secret config values (``+teacher.llm.extra.api_key=...`` given on the
    command line, environment secrets) out of what Hydra itself writes: the sweep launcher's
    console lines, a failed job's overrides on stderr and each job's
    ``.hydra/{config,hydra,overrides}.yaml``, which are rewritten redacted before the job runs."""

    def __init__(self, **_: Any) -> None:
        pass

    def on_multirun_start(self, config: Any, **_: Any) -> None:
        logging.getLogger(_LAUNCHER_LOGGER).addFilter(_OverrideLineFilter(_secrets_of(config)))

    def on_job_start(self, config: Any, **_: Any) -> None:
        secrets = _secrets_of(config)
        subdir = config.hydra.output_subdir
        if subdir is not None:
            folder = Path(str(config.hydra.runtime.output_dir)) / str(subdir)
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                _redact_yaml_file(folder / name, secrets)
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:  # the sweeper's copy, written before any job
            _redact_yaml_file(Path(str(config.hydra.sweep.dir)) / "multirun.yaml", secrets)

    # Hydra calls these too; nothing to do.
    def on_run_start(self, config: Any, **_: Any) -> None: ...
    def on_run_end(self, config: Any, **_: Any) -> None: ...
    def on_multirun_end(self, config: Any, **_: Any) -> None: ...

    def on_job_end(self, config: Any, job_return: Any = None, **_: Any) -> None:
        """Hydra prints a failed job's overrides ('Error executing job with overrides: [...]')."""
        if job_return is not None and job_return.overrides:
            secrets = _secrets_of(config)
            job_return.overrides = [redact_overrides([o], secrets) for o in job_return.overrides]


def _redact_yaml_file(path: Path, secrets: list[str]) -> None:
    """Rewrite a yaml file of Hydra's with secret-named keys, secret values and secret overrides
    (``key=value`` items) redacted; a missing file is left alone."""
    import yaml

    if not path.is_file():
        return
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # not Hydra's plain yaml after all: the known secret values at least
        if redact_text(text, secrets) != text:
            from stsc.store import atomic_write_text

            atomic_write_text(path, redact_text(text, secrets))
        return
    clean = data
    if isinstance(data, list):  # overrides.yaml
        clean = [redact_overrides([o], secrets) if isinstance(o, str) else o for o in data]
    clean = redact_mapping(clean, secrets)
    if clean != data:
        from stsc.store import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(clean, sort_keys=False, allow_unicode=True))


def _secrets_of(config: Any) -> list[str]:
    """Secret values of the environment and of ``config`` (a DictConfig), longest first."""
    from omegaconf import OmegaConf

    return known_secrets(config_secret_values(OmegaConf.to_container(config, resolve=False)))
