"""Secret detection and redaction rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stsc.config import TrackingConfig
from stsc.tracking import (
    REDACTED,
    _redact_yaml_text,
    artifact_location,
    flatten,
    looks_secret,
    redact_mapping,
    redact_overrides,
    redact_text,
)


@pytest.mark.parametrize(
    "name",
    [
        "OPENAI_API_KEY",
        "HF_TOKEN",
        "db.password",
        "key",
        "aws_secret_access_key",
        "MY_PROVIDER_API_KEY",
        "credentials",
        "auth_key",
    ],
)
def test_secret_names_are_recognised(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "content_key",
        "max_tokens",
        "api_key_env",
        "token_env",
        "prompt_tokens",
        "monkey",
        "input_cost_per_token",
        "output_cost_per_token",
    ],
)
def test_ordinary_names_are_not_secrets(name: str) -> None:
    assert not looks_secret(name)


def test_redaction_covers_secret_keys_and_secret_values() -> None:
    cfg = {"llm": {"api_key": "abc", "api_key_env": "OPENAI_API_KEY", "note": "uses sk-live-123456"}}
    out = redact_mapping(cfg, secrets=["sk-live-123456"])
    assert out == {"llm": {"api_key": REDACTED, "api_key_env": "OPENAI_API_KEY", "note": f"uses {REDACTED}"}}


def test_flatten_caps_values_and_joins_keys() -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "long": "x" * 7000, "empty": {}})
    assert (
        flat["a.b"] == "1" and flat["a.c"] == "[1, 2]" and len(flat["long"]) == 6000 and flat["empty"] == "{}"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mlflow:Pa55w0rd@db:5432/mlflow",
        "http://user:Pa55w0rd@mlflow.internal:5000",
        "https://u:Pa55w0rd@host/path?x=1",
    ],
)
def test_url_passwords_are_redacted_wherever_config_is_logged(url: str) -> None:
    cfg = {"tracking": {"uri": url}, "note": f"server at {url}"}
    flat = flatten(redact_mapping(cfg, secrets=[]))
    yaml_text = _redact_yaml_text(f"tracking:\n  uri: {url}\n", secrets=[])
    for text in (*flat.values(), yaml_text, redact_text(f"connecting to {url}", [])):
        assert "Pa55w0rd" not in text and REDACTED in text
    host = url.split("@", 1)[1]
    assert flat["tracking.uri"].endswith(f":{REDACTED}@{host}")  # user and host stay readable
    assert redact_text("sqlite:///tmp/mlflow.db and http://127.0.0.1:5000", []) == (
        "sqlite:///tmp/mlflow.db and http://127.0.0.1:5000"
    )


def test_hydra_files_are_rewritten_without_secrets(tmp_path: Path) -> None:
    from stsc.tracking import _redact_yaml_file

    secret = "sk-config-1234567"
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(f"- +teacher.llm.extra.api_key={secret}\n- hub.token=hf_other\n- seed=3\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"teacher:\n  llm:\n    extra:\n      api_key: {secret}\nseed: 3\n")
    broken = tmp_path / "hydra.yaml"
    broken.write_text(f"key: [unclosed {secret}\n")
    for path in (overrides, config, broken):
        _redact_yaml_file(path, [secret])
    assert overrides.read_text().splitlines() == [
        "- +teacher.llm.extra.api_key=***REDACTED***", "- hub.token=***REDACTED***", "- seed=3"
    ]  # fmt: skip
    assert "seed: 3" in config.read_text() and secret not in config.read_text()
    assert broken.read_text() == "key: [unclosed ***REDACTED***\n"  # not yaml: its secret values still go


def test_sweep_overrides_redact_secret_config_values() -> None:
    overrides = [
        "+teacher.llm.extra.api_key=sk-config-1234567",
        "hub.token=hf_a,hf_b",
        "teacher.llm.api_base=http://u:Pa55w0rd@vllm:8000/v1",
        "sft.learning_rate=1e-4,3e-4",
    ]
    text = redact_overrides(overrides, secrets=["sk-config-1234567"])
    assert "sk-config" not in text and "hf_a" not in text and "Pa55w0rd" not in text
    assert "+teacher.llm.extra.api_key=" in text and "sft.learning_rate=1e-4,3e-4" in text


def test_a_tracking_server_keeps_its_own_artifact_store(tmp_path: Path) -> None:
    local = (tmp_path / "mlruns" / "artifacts").resolve().as_uri()
    assert artifact_location(TrackingConfig(), tmp_path) == local  # sqlite under <root>/mlruns
    assert artifact_location(TrackingConfig(uri=f"file://{tmp_path}/store"), tmp_path) == local
    assert artifact_location(TrackingConfig(uri="http://mlflow:5000"), tmp_path) is None
    assert artifact_location(TrackingConfig(uri="https://u:p@mlflow.example.org"), tmp_path) is None
    s3 = TrackingConfig(uri="http://mlflow:5000", artifact_location="s3://bucket/stsc")
    assert artifact_location(s3, tmp_path) == "s3://bucket/stsc"


def _tracker_with_unwritable_artifacts(tmp_path: Path):
    from stsc.tracking import JobTracker

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the artifact store should be")
    cfg = TrackingConfig(artifact_location=(blocked / "artifacts").as_uri())
    return JobTracker(cfg, tmp_path)


def test_a_stage_run_whose_logging_fails_ends_failed_not_running(tmp_path: Path) -> None:
    from stsc.store import StageReport

    tracker = _tracker_with_unwritable_artifacts(tmp_path)
    tracker.start("job", {"seed": 0})
    stage = tracker.start_stage("probe", "abc123", params={"seed": 0})
    with pytest.raises(OSError):
        stage.finish(StageReport(stage="probe"))  # the summary artifact cannot be written
    assert tracker.client.get_run(stage.run_id).info.status == "FAILED"
    killed = tracker.start_stage("probe", "abc123", params={"seed": 0})
    with pytest.raises(OSError):
        killed.finish(StageReport(stage="probe"), status="KILLED")
    assert tracker.client.get_run(killed.run_id).info.status == "KILLED"


def test_a_run_whose_params_cannot_be_logged_ends_failed_not_running(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from stsc.tracking import JobTracker

    tracker = JobTracker(TrackingConfig(), tmp_path)
    tracker.start("job", {"seed": 0})
    with pytest.raises(MlflowException):
        tracker.start_stage("probe", "abc123", params={"x" * 300: 1})  # over MLflow's 250 characters
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "RUNNING"]  # the stage's, the job's


def test_config_keys_mlflow_refuses_in_a_param_name_are_logged_under_a_safe_name(tmp_path: Path) -> None:
    from stsc.tracking import JobTracker

    tracker = JobTracker(TrackingConfig(), tmp_path)
    areas = {"vision & language": 0.5, "time series (forecasting)": 0.5}
    run_id = tracker.start("job", {"topics": {"areas": areas, "n": 4}})
    params = tracker.client.get_run(run_id).data.params
    assert params["topics.areas.vision _ language"] == "0.5"
    assert params["topics.areas.time series _forecasting_"] == "0.5" and params["topics.n"] == "4"


def test_stage_runs_redact_the_secret_values_given_on_the_command_line(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from stsc.store import StageReport
    from stsc.tracking import JobTracker

    secret = "sk-cli-given-0123456789"  # e.g. +teacher.llm.extra.api_key=..., not in the environment
    tracker = JobTracker(TrackingConfig(), tmp_path, extra_secrets=[secret])
    tracker.start("job", {"seed": 0})
    stage = tracker.start_stage("probe", "abc123", params={"seed": 0})
    report = StageReport(stage="probe")
    report.notes["last_error"] = f"refused with key {secret}"
    ctx = SimpleNamespace(tables={"calls": [{"message": f"401 for {secret}"}]}, artifacts=[])
    stage.finish(report, ctx)
    root = Path(tracker.client.download_artifacts(stage.run_id, "", str(tmp_path / "down")))
    texts = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert {"stage_summary.json", "tables/calls.json"} <= set(texts)
    assert all(secret not in text for text in texts.values()), texts
    assert "***REDACTED***" in texts["tables/calls.json"] and "***REDACTED***" in texts["stage_summary.json"]


def test_the_log_filter_redacts_url_passwords_and_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from stsc.tracking import RedactingFilter, looks_secret

    for name in [k for k in os.environ if looks_secret(k)]:
        monkeypatch.delenv(name)  # no secret in the environment, none in the config
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([]))
    logger = logging.getLogger("stsc.test_redaction")
    logger.addHandler(handler)
    try:
        logger.warning("served at %s", "http://alice:Pa55w0rd-1@vllm:8000/v1")
        try:
            raise ConnectionError("cannot reach http://bob:Pa55w0rd-2@mlflow:5000")
        except ConnectionError:
            logger.warning("closing failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "http://alice:***REDACTED***@vllm:8000/v1" in text and "ConnectionError" in text
    assert "Pa55w0rd" not in text


def test_a_job_run_carries_its_stages_metrics_and_cost_for_comparing_jobs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from stsc.store import StageReport
    from stsc.tracking import JobTracker

    tracker = JobTracker(TrackingConfig(), tmp_path)
    job_id = tracker.start("job", {"seed": 0})
    curate = StageReport(stage="curate", items_in=20, items_out=16, cost_usd=0.5)
    curate.drop("failed_episode", 4)
    tracker.start_stage("curate", "k1", params={"seed": 0}).finish(curate)
    evaluate = StageReport(stage="evaluate", cost_usd=1.25)
    evaluate.metrics.update({"aup_best.sft": 0.96, "aup_delta_best.sft_vs_base": 0.019})
    tracker.record_stage("evaluate", "k2", tmp_path, evaluate, cache_hit=True, params={"seed": 0})
    run = tracker.client.get_run(job_id)
    m = run.data.metrics
    assert m["curate.items_out"] == 16 and m["curate.drop.failed_episode"] == 4
    assert m["evaluate.aup_best.sft"] == 0.96 and m["evaluate.aup_delta_best.sft_vs_base"] == 0.019
    assert m["total_cost_usd"] == 1.75 and m["new_cost_usd"] == 0.5  # the cached stage cost nothing now
    assert run.data.tags["stages"] == "curate,evaluate" and run.data.tags["cached_stages"] == "evaluate"
    ctx = SimpleNamespace(tables={}, artifacts=[])
    tracker.start_stage("sft", "k3", params={"seed": 0}).finish(StageReport(stage="sft"), ctx)
    assert "sft.items_out" in tracker.client.get_run(job_id).data.metrics


def test_a_cache_hit_stage_run_shows_the_stored_tables_and_links_the_run_that_computed_them(
    tmp_path: Path,
) -> None:
    import json
    from types import SimpleNamespace

    from stsc.store import StageReport
    from stsc.tracking import JobTracker

    rows = [{"task": "iris", "score": 0.9}]
    first = JobTracker(TrackingConfig(), tmp_path)
    first.start("first", {"seed": 0})
    computed = first.start_stage("rollout", "abc123", params={"seed": 0})
    computed.finish(StageReport(stage="rollout"), SimpleNamespace(tables={"episodes": rows}, artifacts=[]))
    folder = tmp_path / "store" / "rollout" / "abc123"
    folder.mkdir(parents=True)
    (folder / "table_episodes.json").write_text(json.dumps(rows))
    second = JobTracker(TrackingConfig(), tmp_path)
    second.start("second", {"seed": 0})
    second.record_stage("rollout", "abc123", folder, StageReport(stage="rollout"), True, {"seed": 0})
    (hit,) = second.client.search_runs(
        [second.experiment_id], f"tags.`mlflow.parentRunId` = '{second.run_id}'"
    )
    assert hit.data.tags["cache_hit"] == "true" and hit.data.tags["computed_in_run"] == computed.run_id
    assert computed.run_id in hit.data.tags["mlflow.note.content"]
    assert hit.data.tags["stage_dir"] == str(folder)
    local = Path(second.client.download_artifacts(hit.info.run_id, "tables", str(tmp_path / "dl")))
    assert json.loads((local / "episodes.json").read_text())["data"] == [["iris", 0.9]]


def test_runs_record_the_commit_of_stscs_code_even_when_the_root_is_outside_any_checkout(
    tmp_path: Path,
) -> None:
    import subprocess

    from stsc.tracking import JobTracker, git_commit

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the code is not in a git checkout")
    assert git_commit(tmp_path) == head.stdout.strip()
    tracker = JobTracker(TrackingConfig(), tmp_path)
    tags = tracker.client.get_run(tracker.start("job", {"seed": 0})).data.tags
    assert tags["git_commit"] == tags["mlflow.source.git.commit"] == head.stdout.strip()


def test_the_swept_keys_come_from_the_command_line_and_from_a_recipes_sweeper_params() -> None:
    from stsc.tracking import swept_keys

    overrides = ["rollout.per_task=1,2", "stages=[a,b]", "+x.y=range(1,3)", "seed=0"]
    assert swept_keys(overrides) == ["rollout.per_task", "x.y"]
    assert swept_keys(["experiment=ablate_task_scaling"], {"curate.task_fraction": "0.25,0.5,1.0"}) == [
        "curate.task_fraction"
    ]
