"""The ``stsc-aup`` command, run as a subprocess."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from .conftest import GOLDEN, MLGYM_REPORTED_MODELS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stsc_aup(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stsc.evaluation.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_published_results_end_to_end(mlgym_runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    models = ",".join(MLGYM_REPORTED_MODELS)
    proc = _stsc_aup(
        str(mlgym_runs_dir), "--models", models, "--output", str(out), "--bootstrap", "50", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {
        "aup.csv",
        "aup.json",
        "best_scores.csv",
        "last_scores.csv",
        "performance_profile.png",
    }
    rows = _read_csv(out / "aup.csv")
    assert list(rows[0]) == [
        "model",
        "best_aup",
        "last_aup",
        "best_aup_lo",
        "best_aup_hi",
        "last_aup_lo",
        "last_aup_hi",
    ]
    assert [r["model"] for r in rows] == [*MLGYM_REPORTED_MODELS, "baseline"]
    by_model = {r["model"]: r for r in rows}
    assert (by_model["metagen-gpt-o1"]["best_aup"], by_model["metagen-gpt-o1"]["last_aup"]) == (
        "1.423",
        "1.444",
    )
    assert (by_model["baseline"]["best_aup"], by_model["baseline"]["last_aup"]) == ("1.220", "1.243")
    for name in ("best_scores", "last_scores"):
        assert (out / f"{name}.csv").read_text() == (GOLDEN / f"mlgym_{name}.csv").read_text()
    assert (out / "performance_profile.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((out / "aup.json").read_text())
    assert summary["max_tau"] == 1.5 and summary["pool"] == MLGYM_REPORTED_MODELS
    assert "max_tau: 1.5" in proc.stdout
    assert "pool (12 models + baseline)" in proc.stdout
    assert "metagen-gemini-20-pro" not in proc.stdout


def test_default_pool_is_every_model_found_and_tasks_can_be_restricted(
    mlgym_runs_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    tasks = "blotto,languageModelingFineWeb"
    proc = _stsc_aup(
        str(mlgym_runs_dir), "--tasks", tasks, "-o", str(out), "--bootstrap", "0", "--no-plot", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    rows = _read_csv(out / "aup.csv")
    assert list(rows[0]) == ["model", "best_aup", "last_aup"]
    assert len(rows) == 14
    assert list(_read_csv(out / "best_scores.csv")[0]) == ["model", "blotto", "languageModelingFineWeb"]
    assert not (out / "performance_profile.png").exists()


def _stsc_task_runs(write_run, root: Path) -> None:
    for k, (a, b) in enumerate([(0.71, 0.64), (0.75, 0.60)]):
        write_run(
            "org--student",
            "penguinsSpecies",
            k,
            agent=[{"macro_f1": a}],
            baseline={"macro_f1": 0.5},
            root=root,
        )
        write_run(
            "org--teacher",
            "penguinsSpecies",
            k,
            agent=[{"macro_f1": b}],
            baseline={"macro_f1": 0.5},
            root=root,
        )


def test_stsc_task_scoring_from_task_meta_folders(write_run, tmp_path: Path) -> None:
    _stsc_task_runs(write_run, tmp_path / "runs")
    task = tmp_path / "tasks" / "penguinsSpecies"
    task.mkdir(parents=True)
    (task / "meta.json").write_text(
        json.dumps({"task_id": "penguinsSpecies", "metric": "macro_f1", "higher_is_better": True})
    )
    out = tmp_path / "out"
    args = [
        str(tmp_path / "runs"),
        "--models",
        "org/student,org/teacher",
        "--task-meta",
        str(tmp_path / "tasks"),
    ]
    proc = _stsc_aup(*args, "-o", str(out), "--bootstrap", "20", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in _read_csv(out / "aup.csv")}
    assert set(rows) == {"org/student", "org/teacher", "baseline"}
    assert float(rows["org/student"]["best_aup"]) > float(rows["org/teacher"]["best_aup"])
    assert _read_csv(out / "best_scores.csv")[0] == {"model": "org/student", "penguinsSpecies": "0.75"}


def test_stsc_task_scoring_from_run_metadata(write_run, tmp_path: Path) -> None:
    meta = {"task_id": "lossTask", "metric": "loss", "higher_is_better": False, "seed": 0}
    write_run("a", "lossTask", agent=[{"loss": 1.0}], baseline={"loss": 2.0}, meta=meta)
    write_run("b", "lossTask", agent=[{"loss": 1.5}], baseline={"loss": 2.0}, meta=meta)
    out = tmp_path / "out"
    proc = _stsc_aup(str(tmp_path / "runs"), "-o", str(out), "--bootstrap", "0", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["model"]: r for r in _read_csv(out / "aup.csv")}
    assert float(rows["a"]["best_aup"]) > float(rows["b"]["best_aup"]) > float(rows["baseline"]["best_aup"])


def test_unknown_task_fails_with_a_message_naming_it(write_run, tmp_path: Path) -> None:
    write_run("a", "mysteryTask", agent=[{"acc": 0.5}])
    proc = _stsc_aup(str(tmp_path / "runs"), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "mysteryTask" in proc.stderr and "meta.json" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_importing_the_command_does_not_import_matplotlib(tmp_path: Path) -> None:
    code = "import sys, stsc.evaluation.cli; print('matplotlib' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "False"
