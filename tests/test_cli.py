"""The `stsc` entry point as users run it: subprocesses, real MLflow on a temp sqlite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STSC = [sys.executable, "-m", "stsc.cli"]
FAKE_ENV_SECRET = "sk-env-secret-0123456789"
FAKE_CONFIG_SECRET = "sk-config-secret-9876543210"


def _run(
    args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(extra_env or {})}
    proc = subprocess.run(STSC + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def _all_runs(root: Path):
    client = _client(root)
    exp = client.get_experiment_by_name("stsc")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_a_two_job_sweep_nests_jobs_and_stages_under_one_sweep_run(tmp_path: Path) -> None:
    _run(
        [
            "-m",
            "rollout.per_task=1,2",
            "stages=[probe_items,probe_sum]",
            "plugins=[tests.plugin_stages]",
            f"root={tmp_path}",
            "topics.n=3",
        ],
        tmp_path,
    )
    _, runs = _all_runs(tmp_path)
    kinds = {}
    for r in runs:
        kinds.setdefault(r.data.tags.get("stsc.kind"), []).append(r)
    assert len(kinds["sweep"]) == 1 and len(kinds["job"]) == 2 and len(kinds["stage"]) == 4
    sweep_id = kinds["sweep"][0].info.run_id
    job_ids = {r.info.run_id for r in kinds["job"]}
    assert all(r.data.tags["mlflow.parentRunId"] == sweep_id for r in kinds["job"])
    assert all(r.data.tags["mlflow.parentRunId"] in job_ids for r in kinds["stage"])
    sums = [r for r in kinds["stage"] if r.data.tags["stage"] == "probe_sum"]
    assert sorted(r.data.metrics["total"] for r in sums) == [5.0, 10.0]  # 0+1+4, times per_task
    items_runs = [r for r in kinds["stage"] if r.data.tags["stage"] == "probe_items"]
    assert sorted(r.data.tags["cache_hit"] for r in items_runs) == ["false", "true"]  # shared upstream
    assert all(r.info.status == "FINISHED" for r in runs)
    # the jobs are named after their swept values, and carry their stages' headline metrics
    sweep, jobs = kinds["sweep"][0], sorted(kinds["job"], key=lambda r: r.info.run_name)
    assert sweep.data.tags["stsc.swept_keys"] == "rollout.per_task"
    assert [j.info.run_name for j in jobs] == [
        "quickstart rollout.per_task=1",
        "quickstart rollout.per_task=2",
    ]
    assert all(j.data.tags["overrides"].startswith("rollout.per_task=") for j in jobs)
    assert all("stsc rollout.per_task=" in j.data.tags["mlflow.note.content"] for j in jobs)
    assert sorted(j.data.metrics["probe_sum.total"] for j in jobs) == [5.0, 10.0]  # comparable per job
    assert sorted(j.data.tags["cached_stages"] for j in jobs) == ["-", "probe_items"]


def test_a_stage_run_records_params_metrics_tags_and_artifacts(tmp_path: Path) -> None:
    _run(
        ["stages=[probe_items]", "plugins=[tests.plugin_stages]", f"root={tmp_path}", "topics.n=4"], tmp_path
    )
    client, runs = _all_runs(tmp_path)
    (stage_run,) = [r for r in runs if r.data.tags.get("stsc.kind") == "stage"]
    (job_run,) = [r for r in runs if r.data.tags.get("stsc.kind") == "job"]
    assert stage_run.data.params["topics.n"] == "4"
    assert stage_run.data.metrics["items_out"] == 4 and "wall_s" in stage_run.data.metrics
    assert len(stage_run.data.tags["content_key"]) == 12 and stage_run.data.tags["git_commit"]
    stage_files = {a.path for a in client.list_artifacts(stage_run.info.run_id)}
    assert "stage_summary.json" in stage_files
    assert "tables/items.json" in {a.path for a in client.list_artifacts(stage_run.info.run_id, "tables")}
    job_files = {a.path for a in client.list_artifacts(job_run.info.run_id, "config")}
    assert "config/resolved_config.yaml" in job_files and "config/.hydra" in job_files
    assert job_run.data.params["sft.method"] in {"lora", "full"}


def _every_text(root: Path, client, runs) -> str:
    chunks = []
    for r in runs:
        chunks += [json.dumps(r.data.params), json.dumps(r.data.tags)]
        local = Path(client.download_artifacts(r.info.run_id, "", str(root / f"dl-{r.info.run_id}")))
        chunks += [p.read_text(errors="replace") for p in local.rglob("*") if p.is_file()]
    chunks += [p.read_text(errors="replace") for p in (root / "mlruns" / "hydra").rglob("*.log")]
    return "\n".join(chunks)


def test_secrets_in_the_environment_and_config_never_reach_mlflow_or_logs(tmp_path: Path) -> None:
    proc = _run(
        [
            "stages=[probe_items]",
            "plugins=[tests.plugin_stages]",
            f"root={tmp_path}",
            "topics.n=2",
            f"+teacher.llm.extra.api_key={FAKE_CONFIG_SECRET}",
            f"label=run-with-{FAKE_ENV_SECRET}",
        ],
        tmp_path,
        {"MY_PROVIDER_API_KEY": FAKE_ENV_SECRET, "STSC_TEST_LOG_SECRET_FROM": "MY_PROVIDER_API_KEY"},
    )
    client, runs = _all_runs(tmp_path)
    text = _every_text(tmp_path, client, runs)
    assert "probe sees credential ***REDACTED***" in text  # the log line exists, redacted
    assert "teacher.llm.extra.api_key" in text  # the key is recorded, its value is not
    assert FAKE_ENV_SECRET not in text and FAKE_CONFIG_SECRET not in text
    assert FAKE_ENV_SECRET not in proc.stdout + proc.stderr


def test_a_sweep_with_a_failing_job_ends_its_sweep_run_failed_and_logs_no_secret(tmp_path: Path) -> None:
    url_password = "Url-Pa55w0rd-4242"
    args = [
        "-m",
        "seed=0,13",
        "stages=[probe_fail]",
        "plugins=[tests.plugin_stages]",
        f"root={tmp_path}",
        f"+teacher.llm.extra.api_key={FAKE_CONFIG_SECRET}",
        f"teacher.llm.api_base=http://user:{url_password}@vllm.internal:8000/v1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(STSC + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "failing as asked" in proc.stdout + proc.stderr
    client, runs = _all_runs(tmp_path)
    (sweep,) = [r for r in runs if r.data.tags.get("stsc.kind") == "sweep"]
    assert sweep.info.status == "FAILED"  # not left RUNNING forever
    jobs = {r.data.params["seed"]: r.info.status for r in runs if r.data.tags.get("stsc.kind") == "job"}
    assert jobs == {"0": "FINISHED", "13": "FAILED"}
    assert "+teacher.llm.extra.api_key=" in sweep.data.tags["overrides"]
    text = _every_text(tmp_path, client, runs)
    assert FAKE_CONFIG_SECRET not in text and url_password not in text
    assert "http://user:***REDACTED***@vllm.internal:8000/v1" in text  # the URL stays readable
    # nor on the console (Hydra's launcher prints each job's overrides) or in any file on disk
    # (Hydra writes each job's config and overrides under .hydra/)
    console = proc.stdout + proc.stderr
    assert "#1 : seed=13" in console and "+teacher.llm.extra.api_key=***REDACTED***" in console
    assert FAKE_CONFIG_SECRET not in console and url_password not in console
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parts[-2:] == (".hydra", "overrides.yaml") for p in files)
    leaks = [
        p
        for p in files
        if FAKE_CONFIG_SECRET.encode() in p.read_bytes() or url_password.encode() in p.read_bytes()
    ]
    assert not leaks


def test_the_printed_summary_hides_the_tracking_servers_password(capsys: pytest.CaptureFixture) -> None:
    from types import SimpleNamespace

    from stsc.cli import _print_summary

    tracker = SimpleNamespace(
        run_id="r1", client=SimpleNamespace(tracking_uri="http://u:Pa55w0rd@mlflow:5000")
    )
    cfg = SimpleNamespace(tracking=SimpleNamespace(experiment="stsc"))
    _print_summary(cfg, [], tracker)
    out = capsys.readouterr().out
    assert "Pa55w0rd" not in out and "http://u:***REDACTED***@mlflow:5000" in out


def _start_writing_items(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``stsc args`` started with slow ``probe_items``, once its journal holds three items."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "STSC_TEST_ITEM_DELAY": "0.1"}
    proc = subprocess.Popen(
        STSC + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    journal: Path | None = None
    deadline = time.monotonic() + 120
    while journal is None or len(journal.read_text().splitlines()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
        journal = next((tmp_path / "mlruns" / "store").glob("probe_items/*/journal.jsonl"), None)
    return proc, journal


def test_sigterm_marks_the_runs_killed_and_a_rerun_resumes(tmp_path: Path) -> None:
    args = ["stages=[probe_items]", "plugins=[tests.plugin_stages]", f"root={tmp_path}", "topics.n=40"]
    proc, journal = _start_writing_items(args, tmp_path)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert b"stopped by SIGTERM" in stdout + stderr
    _, runs = _all_runs(tmp_path)
    assert sorted((r.data.tags["stsc.kind"], r.info.status) for r in runs) == [
        ("job", "KILLED"),
        ("stage", "KILLED"),
    ]
    written = len(journal.read_text().splitlines())
    assert written < 40

    _run(args, tmp_path)
    items = [json.loads(line)["item"] for line in journal.read_text().splitlines()]
    assert len(items) == len(set(items)) == 40  # resumed: nothing written twice


def test_a_job_whose_config_files_cannot_be_logged_ends_its_run_failed(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the artifact store should be")
    args = ["stages=[probe_items]", "plugins=[tests.plugin_stages]", f"root={tmp_path}", "topics.n=2"]
    args.append(f"tracking.artifact_location={(blocked / 'artifacts').as_uri()}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(STSC + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    _, runs = _all_runs(tmp_path)
    assert [(r.data.tags["stsc.kind"], r.info.status) for r in runs] == [("job", "FAILED")]


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_sweep_stopped_by_sigterm_ends_every_run_killed(tmp_path: Path, launcher: str) -> None:
    args = ["-m", "rollout.per_task=1,2", f"hydra/launcher={launcher}", "stages=[probe_items]"]
    args += ["plugins=[tests.plugin_stages]", f"root={tmp_path}", "topics.n=40"]
    proc, journal = _start_writing_items(args, tmp_path)
    proc.send_signal(signal.SIGTERM)  # the sweeping process only, as `kill` or `docker stop` do
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    _, runs = _all_runs(tmp_path)
    statuses = {(r.data.tags["stsc.kind"], r.info.status) for r in runs}
    assert statuses == {("sweep", "KILLED"), ("job", "KILLED"), ("stage", "KILLED")}


@pytest.mark.parametrize("sweep", [False, True])
def test_an_unreachable_tracking_server_fails_naming_the_key_without_its_password(
    tmp_path: Path, sweep: bool
) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    password = "Srv-Pa55w0rd-77"
    args = ["-m"] if sweep else []
    args += ["stages=[probe_items]", "plugins=[tests.plugin_stages]", f"root={tmp_path}", "topics.n=2"]
    args += ["tracking=server", f"tracking.uri=http://alice:{password}@127.0.0.1:{port}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    proc = subprocess.run(STSC + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "tracking.uri" in console, console[-3000:]
    assert f"http://alice:***REDACTED***@127.0.0.1:{port}" in console
    assert password not in console


def test_help_imports_no_heavy_library() -> None:
    code = (
        "import sys; sys.argv=['stsc','--help']\n"
        "import stsc.cli\n"
        "try:\n    stsc.cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch','transformers','trl','mlflow','litellm','datasets') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert "HEAVY=\n" in out.stdout, out.stdout[-500:]
    assert "Configuration groups" in out.stdout


def test_importing_stsc_does_nothing_heavy() -> None:
    code = "import sys, stsc, stsc.config, stsc.pipeline, stsc.store; print(sorted(m for m in ('torch','mlflow','litellm','hydra','pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("override", ["stages=[tpoics]", "sandbox.backend=k8s"])
def test_bad_input_exits_with_a_message_naming_it(tmp_path: Path, override: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        STSC + [override, f"root={tmp_path}", "tracking.enabled=false"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert override.split("=")[1].strip("[]") in proc.stdout + proc.stderr


def test_an_unexpected_error_is_printed_without_secrets(tmp_path: Path) -> None:
    args = ["stages=[probe_fail]", "plugins=[tests.plugin_stages]", f"root={tmp_path}", "seed=13"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": FAKE_ENV_SECRET,
           "STSC_TEST_LOG_SECRET_FROM": "OPENAI_API_KEY", "HYDRA_FULL_ERROR": "1"}  # fmt: skip
    proc = subprocess.run(STSC + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0, console[-3000:]
    assert "probe_fail: failing as asked (seed=13) holding" in console
    assert "ValueError" in console and "http://u:***REDACTED***@host" in console  # the cause too
    assert FAKE_ENV_SECRET not in console


def test_a_plugin_module_that_does_not_exist_is_named_as_a_config_error(tmp_path: Path) -> None:
    args = ["stages=[probe_items]", "plugins=[tests.no_such_plugin]", f"root={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(STSC + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 2, console[-3000:]
    assert "plugins=[tests.no_such_plugin]: no module 'tests.no_such_plugin'" in console
    assert "Traceback" not in console
