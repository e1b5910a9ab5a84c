"""The full loop at a tiny size, as users run it: a `-m` task-scaling sweep as a subprocess, the
sweep table script on its MLflow runs, and a headless-Chromium screenshot of the MLflow UI."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The quickstart recipe scaled down to seconds per stage (same stages, same code paths).
TINY = [
    "topics.n=12", "generator.tasks_per_dataset=1", "split.heldout_fraction=0.4", "agent.max_steps=8",
    "student.tiny_hidden_size=32", "student.tiny_layers=1", "sft.num_train_epochs=1", "sft.max_steps=2",
    "eval.max_steps=2", "eval.runs_per_task=1", "eval.bootstrap_samples=50", "eval.include_base_student=false",
    "eval.models=[{name: submit_baseline, policy: {kind: submit_baseline, name: submit_baseline}}]",
]  # fmt: skip


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "stsc.cli", "-m", "experiment=ablate_task_scaling", f"root={root}",
           "curate.task_fraction=0.5,1.0", *TINY]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root


def test_a_task_scaling_sweep_reuses_upstream_stages_and_yields_its_table(
    sweep_root: Path, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep_root / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("stsc")
    stages = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=500)
        if r.data.tags.get("stsc.kind") == "stage"
    ]
    by_stage: dict[str, list[str]] = {}
    for r in stages:
        by_stage.setdefault(r.data.tags["stage"], []).append(r.data.tags["cache_hit"])
    assert sorted(by_stage["rollout"]) == ["false", "true"]  # the second job reuses the trajectories
    assert sorted(by_stage["curate"]) == ["false", "false"]  # each fraction curates its own set
    out = tmp_path / "table"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "sweep_table.py"), "--root", str(sweep_root),
         "--key", "curate.task_fraction", "--output", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "sweep_jobs: 2"
    rows = list(csv.DictReader(open(out / "sweep_table.csv")))
    assert [float(r["curate.task_fraction"]) for r in rows] == [0.5, 1.0]
    assert int(rows[0]["sft_examples"]) <= int(rows[1]["sft_examples"])
    assert all(float(r["best_aup"]) > 0 for r in rows)
    assert (out / "sweep_aup.png").stat().st_size > 5000


def test_the_mlflow_ui_shows_the_runs_in_a_headless_browser(sweep_root: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; .ci/run installs it)")
    png = tmp_path / "ui.png"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "ui_screenshot.py"), "--root", str(sweep_root), "--output", str(png)],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def _sweep_table_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_table", REPO / "experiments" / "sweep_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TF, LR = "curate.task_fraction", "sft.learning_rate"


def _job(
    root: Path, values: dict[str, object], sweep_id: str | None, evaluate: dict, groups: tuple[str, ...] = ()
) -> str:
    """One `stsc` job's MLflow runs, written by stsc's own trackers: its curate stage and its evaluate
    stage, ``evaluate`` = {"key", "how": computed | cached | FAILED | KILLED | RUNNING | absent,
    "sft": (best, last)}, plus "intervals": True to log the interval bounds as metrics (and no
    aup.csv), "job": "RUNNING" for a job still running after its evaluate stage. ``values`` are its
    swept config values, set by overrides; those of config ``groups`` are no params."""
    from types import SimpleNamespace

    from stsc.config import TrackingConfig
    from stsc.store import StageReport
    from stsc.tracking import JobTracker

    job = JobTracker(TrackingConfig(), root)
    config: dict[str, dict[str, object]] = {}
    for key, value in values.items():
        if key not in groups:
            group, field = key.split(".")
            config.setdefault(group, {})[field] = value
    overrides = [f"{k}={'null' if v is None else v}" for k, v in values.items()]
    job_id = job.start("job", config, parent_run_id=sweep_id, overrides=overrides)
    job.start_stage("curate", f"c-{evaluate['key']}", {}).finish(StageReport("curate", items_out=4))
    how, report = evaluate["how"], _evaluate_report(evaluate)
    if how == "cached":
        job.record_stage("evaluate", evaluate["key"], root, report, True, {})
    elif how == "RUNNING":
        job.start_stage("evaluate", evaluate["key"], {})
    elif how != "absent":
        folder = root / "store" / "evaluate" / evaluate["key"]
        folder.mkdir(parents=True, exist_ok=True)
        best, last = evaluate["sft"]
        (folder / "aup.csv").write_text(
            f"model,best_aup,last_aup,best_aup_lo,best_aup_hi,last_aup_lo,last_aup_hi\n"
            f"sft,{best:.3f},{last:.3f},{best - 0.1:.3f},{best + 0.1:.3f},{last - 0.1:.3f},{last + 0.1:.3f}\n"
            f"baseline,0.500,0.500,0.500,0.500,0.500,0.500\n"
        )
        stage = job.start_stage("evaluate", evaluate["key"], {})
        # a stage that failed before scoring logged no aup.csv; one killed later did
        logged = how == "FAILED" or evaluate.get("intervals")
        ctx = SimpleNamespace(tables={}, artifacts=[] if logged else [folder / "aup.csv"])
        stage.finish(report, ctx, status="FINISHED" if how == "computed" else how)
    if how != "RUNNING" and evaluate.get("job") != "RUNNING":
        job.end("FINISHED" if how in ("computed", "cached") else "FAILED")
    return job_id


def _evaluate_report(evaluate: dict):
    """The evaluate stage's report: AUP metrics unless it failed (before scoring) or has no scores."""
    from stsc.store import StageReport

    report = StageReport("evaluate")
    if evaluate["how"] == "FAILED" or "sft" not in evaluate:
        return report
    (best, last), metrics = evaluate["sft"], report.metrics
    metrics |= {
        "aup_best.sft": best,
        "aup_last.sft": last,
        "aup_best.baseline": 0.5,
        "aup_last.baseline": 0.5,
    }
    if evaluate.get("intervals"):
        for which, value in (("best", best), ("last", last)):
            metrics |= {f"aup_{which}_lo.sft": value - 0.1, f"aup_{which}_hi.sft": value + 0.1}
    return report


def _sweep_run(root: Path, swept: list[str] | None = None) -> str:
    """A sweep run as ``stsc -m`` creates it, tagged with its ``swept`` keys (None: untagged, as
    sweeps run before the tag existed)."""
    from stsc.config import TrackingConfig
    from stsc.tracking import SWEPT_KEYS_TAG, make_client

    client, experiment_id = make_client(TrackingConfig(), root)
    tags = {"stsc.kind": "sweep"} | ({SWEPT_KEYS_TAG: ",".join(swept)} if swept is not None else {})
    return client.create_run(experiment_id, run_name="sweep", tags=tags).info.run_id


def test_the_sweep_table_reads_a_cached_evaluate_stage_from_the_run_that_computed_it(tmp_path: Path) -> None:
    table = _sweep_table_module()
    _job(tmp_path, {TF: 1.0}, None, {"key": "k-full", "how": "computed", "sft": (0.9, 0.8)})  # an earlier run
    sweep = _sweep_run(tmp_path, [TF])
    _job(tmp_path, {TF: 0.5}, sweep, {"key": "k-half", "how": "computed", "sft": (0.7, 0.6)})
    _job(tmp_path, {TF: 1.0}, sweep, {"key": "k-full", "how": "cached", "sft": (0.9, 0.8)})
    rows = table.collect(table._client(tmp_path, None), "stsc", sweep, [TF], "sft")
    assert [(r[TF], r["best_aup"], r["best_hi"], r["last_aup"]) for r in rows] == [
        ("0.5", "0.700", "0.800", "0.600"),
        ("1.0", "0.900", "1.000", "0.800"),
    ]


def test_the_sweep_table_leaves_out_jobs_whose_evaluate_stage_did_not_finish(tmp_path: Path, capsys) -> None:
    table = _sweep_table_module()
    sweep = _sweep_run(tmp_path, [TF])
    _job(tmp_path, {TF: 0.25}, sweep, {"key": "k-q", "how": "FAILED", "sft": (0.0, 0.0)})
    _job(tmp_path, {TF: 0.5}, sweep, {"key": "k-half", "how": "computed", "sft": (0.7, 0.6)})
    _job(tmp_path, {TF: 0.75}, sweep, {"key": "k-3q", "how": "KILLED", "sft": (0.2, 0.1)})  # partial runs
    _job(tmp_path, {TF: 1.0}, sweep, {"key": "k-full", "how": "absent"})  # failed upstream
    _job(tmp_path, {TF: 0.6}, sweep, {"key": "k-6", "how": "RUNNING"})
    _job(tmp_path, {TF: 0.4}, sweep, {"key": "k-4", "how": "computed", "sft": (0.4, 0.3), "job": "RUNNING"})
    rows = table.collect(table._client(tmp_path, None), "stsc", sweep, [TF], "sft")
    assert [(r[TF], r["best_aup"], r["last_aup"]) for r in rows] == [
        ("0.4", "0.400", "0.300"),
        ("0.5", "0.700", "0.600"),
    ]
    err = capsys.readouterr().err
    assert "(curate.task_fraction=0.25) left out: its evaluate stage FAILED" in err
    assert "(curate.task_fraction=0.75) left out: its evaluate stage KILLED" in err
    assert "(curate.task_fraction=0.6) left out: its evaluate stage RUNNING" in err
    assert "(curate.task_fraction=1.0) left out: it has no evaluate stage" in err


def test_the_sweep_table_orders_a_nullable_key_numbers_first_and_plots_it(tmp_path: Path) -> None:
    table = _sweep_table_module()
    tokens = "curate.max_total_tokens"
    sweep = _sweep_run(tmp_path, [tokens])
    for value, key, best in ((None, "k-none", 0.9), (16000, "k-16k", 0.8), (4000, "k-4k", 0.7)):
        _job(tmp_path, {tokens: value}, sweep, {"key": key, "how": "computed", "sft": (best, best)})
    rows = table.collect(table._client(tmp_path, None), "stsc", sweep, [tokens], "sft")
    assert [(r[tokens], r["best_aup"]) for r in rows] == [
        ("4000", "0.700"),
        ("16000", "0.800"),
        ("None", "0.900"),
    ]
    table.plot(rows, [tokens], "sft", tmp_path / "sweep_aup.png")
    assert (tmp_path / "sweep_aup.png").stat().st_size > 5000


def test_the_sweep_plot_draws_an_interval_that_lies_above_its_point_estimate(tmp_path: Path) -> None:
    # a percentile interval over resampled runs: MLGym's published runs give the baseline of the
    # pool (claude-35-sonnet-new, deepseek-r1) Best AUP 1.207 with the interval [1.208, 1.303]
    table = _sweep_table_module()
    rows = [
        {TF: "0.5", "best_aup": "1.207", "best_lo": "1.208", "best_hi": "1.303",
         "last_aup": "1.250", "last_lo": "1.200", "last_hi": "1.300"},
        {TF: "1.0", "best_aup": "1.300", "best_lo": "1.250", "best_hi": "1.350",
         "last_aup": "1.310", "last_lo": "", "last_hi": ""},
    ]  # fmt: skip
    table.plot(rows, [TF], "baseline", tmp_path / "sweep_aup.png")
    assert (tmp_path / "sweep_aup.png").stat().st_size > 5000


def test_the_sweep_table_gives_every_swept_key_a_column_and_the_plot_a_line_per_other_value(
    tmp_path: Path, capsys
) -> None:
    table = _sweep_table_module()
    sweep = _sweep_run(tmp_path, [TF, LR])  # stsc -m curate.task_fraction=0.5,1.0 sft.learning_rate=1e-4,2e-4
    for i, (fraction, rate) in enumerate([(0.5, 1e-4), (0.5, 2e-4), (1.0, 1e-4), (1.0, 2e-4)]):
        best = 0.5 + 0.1 * i
        _job(
            tmp_path,
            {TF: fraction, LR: rate},
            sweep,
            {"key": f"k{i}", "how": "computed", "sft": (best, best)},
        )
    out = tmp_path / "table"
    assert table.main(["--root", str(tmp_path), "--key", TF, "--output", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "sweep_table.csv")))
    assert [(r[TF], r[LR], r["best_aup"]) for r in rows] == [
        ("0.5", "0.0001", "0.500"),
        ("0.5", "0.0002", "0.600"),
        ("1.0", "0.0001", "0.700"),
        ("1.0", "0.0002", "0.800"),
    ]
    printed = capsys.readouterr()
    assert printed.out.splitlines()[1].split()[:3] == [TF, LR, "sft_examples"]
    assert "share" not in printed.err
    assert (out / "sweep_aup.png").stat().st_size > 5000
    client = table._client(tmp_path, None)
    assert table.sweep_keys(client, sweep, None) == [TF, LR]
    assert table.sweep_keys(client, sweep, [LR]) == [LR, TF]  # the plot's x axis first


def test_the_sweep_table_reads_a_swept_config_group_from_the_jobs_overrides(tmp_path: Path) -> None:
    table = _sweep_table_module()
    sweep = _sweep_run(
        tmp_path, ["curate", TF]
    )  # stsc -m curate=default,no_truncation curate.task_fraction=...
    for i, (arm, fraction) in enumerate([("default", 0.5), ("no_truncation", 0.5), ("default", 1.0)]):
        evaluate = {"key": f"k{i}", "how": "computed", "sft": (0.5 + 0.1 * i, 0.5)}
        _job(tmp_path, {"curate": arm, TF: fraction}, sweep, evaluate, groups=("curate",))
    keys = table.sweep_keys(table._client(tmp_path, None), sweep, [TF])
    rows = table.collect(table._client(tmp_path, None), "stsc", sweep, keys, "sft")
    assert [(r[TF], r["curate"], r["best_aup"]) for r in rows] == [
        ("0.5", "default", "0.500"),
        ("0.5", "no_truncation", "0.600"),
        ("1.0", "default", "0.700"),
    ]
    table.plot(rows, keys, "sft", tmp_path / "sweep_aup.png")  # one line has a single point
    assert (tmp_path / "sweep_aup.png").stat().st_size > 5000


def test_the_sweep_table_names_jobs_that_differ_only_in_a_key_it_was_not_given(
    tmp_path: Path, capsys
) -> None:
    # a sweep run from before the swept keys were tagged: only --key names them
    table = _sweep_table_module()
    sweep = _sweep_run(tmp_path, None)
    for i, rate in enumerate((1e-4, 2e-4)):
        _job(tmp_path, {TF: 0.5, LR: rate}, sweep, {"key": f"k{i}", "how": "computed", "sft": (0.5, 0.5)})
    client = table._client(tmp_path, None)
    assert table.sweep_keys(client, sweep, [TF]) == [TF]
    assert len(table.collect(client, "stsc", sweep, [TF], "sft")) == 2
    assert "share curate.task_fraction=0.5: the sweep varies a key the table lacks" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="names no swept keys"):
        table.sweep_keys(client, sweep, None)
    with pytest.raises(
        SystemExit, match="no job of sweep .* has a param or an override 'curate.task_fractio'"
    ):
        table.collect(client, "stsc", sweep, ["curate.task_fractio"], "sft")


def _counting_client(root: Path):
    """A real MLflow client on ``root``'s store that counts its searches and artifact downloads."""
    from collections import Counter

    from mlflow.tracking import MlflowClient

    class CountingClient(MlflowClient):
        calls: Counter = Counter()

        def search_runs(self, *args, **kwargs):
            self.calls["search_runs"] += 1
            return super().search_runs(*args, **kwargs)

        def download_artifacts(self, *args, **kwargs):
            self.calls["download_artifacts"] += 1
            return super().download_artifacts(*args, **kwargs)

    return CountingClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def test_the_sweep_table_reads_finished_jobs_from_their_own_metrics_alone(tmp_path: Path) -> None:
    table = _sweep_table_module()
    sweep = _sweep_run(tmp_path, [TF])
    for fraction, best in ((1.0, 0.9), (0.5, 0.7)):  # intervals logged as metrics, no aup.csv
        evaluate = {"key": f"k{fraction}", "how": "computed", "sft": (best, best - 0.1), "intervals": True}
        _job(tmp_path, {TF: fraction}, sweep, evaluate)
    client = _counting_client(tmp_path)
    rows = table.collect(client, "stsc", sweep, [TF], "sft")
    assert [[r[c] for c in (TF, *table.NUMBERS)] for r in rows] == [
        ["0.5", 4, "0.700", "0.600", "0.800", "0.600", "0.500", "0.700"],
        ["1.0", 4, "0.900", "0.800", "1.000", "0.800", "0.700", "0.900"],
    ]
    assert dict(client.calls) == {"search_runs": 1}  # the sweep's jobs; no stage run, no artifact
    with pytest.raises(SystemExit, match=r"'base' is not in the AUP pool .* \['baseline', 'sft'\]"):
        table.collect(client, "stsc", sweep, [TF], "base")


def test_the_sweep_table_reads_intervals_from_aup_csv_only_where_the_metrics_lack_them(
    tmp_path: Path, capsys
) -> None:
    table = _sweep_table_module()
    sweep = _sweep_run(tmp_path, [TF])
    _job(tmp_path, {TF: 0.5}, sweep, {"key": "k-half", "how": "computed", "sft": (0.7, 0.6)})
    # cached from a run this experiment does not hold (another experiment, or tracking=off)
    _job(tmp_path, {TF: 1.0}, sweep, {"key": "k-elsewhere", "how": "cached", "sft": (0.9, 0.8)})
    client = _counting_client(tmp_path)
    rows = table.collect(client, "stsc", sweep, [TF], "sft")
    assert [(r[TF], r["best_aup"], r["best_lo"], r["last_hi"]) for r in rows] == [
        ("0.5", "0.700", "0.600", "0.700"),
        ("1.0", "0.900", "", ""),
    ]
    assert (
        "key k-elsewhere) of job job curate.task_fraction=1.0 has no finished run" in capsys.readouterr().err
    )
    # jobs, each job's stage runs, the search for the cached stage's computing run; one aup.csv
    assert dict(client.calls) == {"search_runs": 4, "download_artifacts": 1}


def test_the_sweep_table_reads_jobs_logged_before_jobs_carried_their_stages_metrics(tmp_path: Path) -> None:
    from stsc.config import TrackingConfig
    from stsc.tracking import make_client

    table = _sweep_table_module()
    sweep = _sweep_run(tmp_path, None)
    client, experiment_id = make_client(TrackingConfig(), tmp_path)
    job = client.create_run(experiment_id, "job", tags={"mlflow.parentRunId": sweep, "stsc.kind": "job"})
    client.log_param(job.info.run_id, TF, "0.5")
    for stage, metrics in (("curate", {"items_out": 3.0}), ("evaluate", {"aup_best.sft": 0.7})):
        tags = {
            "mlflow.parentRunId": job.info.run_id,
            "stage": stage,
            "cache_hit": "false",
            "content_key": stage,
        }
        run = client.create_run(experiment_id, stage, tags={"stsc.kind": "stage", **tags})
        for name, value in metrics.items():
            client.log_metric(run.info.run_id, name, value)
        if stage == "evaluate":
            (tmp_path / "aup.csv").write_text("model,best_aup,last_aup\nsft,0.700,0.600\n")  # no bootstrap
            client.log_artifact(run.info.run_id, str(tmp_path / "aup.csv"))
        client.set_terminated(run.info.run_id)
    client.set_terminated(job.info.run_id)
    rows = table.collect(table._client(tmp_path, None), "stsc", sweep, [TF], "sft")
    assert [[r[c] for c in (TF, *table.NUMBERS)] for r in rows] == [
        ["0.5", 3, "0.700", "", "", "0.600", "", ""]
    ]
