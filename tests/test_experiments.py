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
    stage, ``evaluate`` = {"key", "how": computed | cached | FAILED | KILLED | absent, "sft": (best, last)}.
    ``values`` are its swept config values, set by overrides; those of config ``groups`` are no params."""
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
    how = evaluate["how"]
    if how == "cached":
        job.record_stage("evaluate", evaluate["key"], root, StageReport("evaluate"), True, {})
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
        ctx = SimpleNamespace(tables={}, artifacts=[] if how == "FAILED" else [folder / "aup.csv"])
        stage.finish(StageReport("evaluate"), ctx, status="FINISHED" if how == "computed" else how)
    job.end("FINISHED" if how in ("computed", "cached") else "FAILED")
    return job_id


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
    _job(tmp_path, {TF: 1.0}, sweep, {"key": "k-full", "how": "cached"})
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
    rows = table.collect(table._client(tmp_path, None), "stsc", sweep, [TF], "sft")
    assert [(r[TF], r["best_aup"], r["last_aup"]) for r in rows] == [("0.5", "0.700", "0.600")]
    err = capsys.readouterr().err
    assert "(curate.task_fraction=0.25) left out: its evaluate stage FAILED" in err
    assert "(curate.task_fraction=0.75) left out: its evaluate stage KILLED" in err
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
