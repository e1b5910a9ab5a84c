"""Task suites: the held-out side of the library, and MLGym tasks imported from a checkout.

The MLGym checkout is a small fake written here (a game scored by a python evaluate.py, a CSV task
on a local dataset, a model task, and a task MLGym-Bench does not score); it is not MLGym's code."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from stsc.config import RootConfig, SplitConfig
from stsc.errors import ConfigError
from stsc.evaluation.mlgym_import import LAUNCHER, SPEC_FILE, import_task, index_tasks
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS
from stsc.evaluation.suites import library_suite, load_suite, mlgym_suite
from stsc.synth.library import LibrarySplit

GAME_EVALUATE = '''\
"""A repeated coordination game: 100 rounds against the column player of target.py."""
import json

from strategy import row_strategy
from target import target_column_strategy

PAYOFF = {(0, 0): 2.0, (1, 1): 1.0}

history, total = [], 0.0
for _ in range(100):
    move = (row_strategy(history), target_column_strategy(history))
    total += PAYOFF.get(move, 0.0)
    history.append(move)
print(json.dumps({"Score": total / 100}))
'''
GAME_STRATEGY = "def row_strategy(history):\n    return 1\n"
BETTER_STRATEGY = "def row_strategy(history):\n    return 0\n"
GAME_TARGET = "def target_column_strategy(history):\n    return history[-1][0] if history else 1\n"

CSV_EVALUATE = """\
import argparse
import csv
import json

parser = argparse.ArgumentParser()
parser.add_argument("--submission_file", required=True)
args = parser.parse_args()
truth = {r["Id"]: float(r["SalePrice"]) for r in csv.DictReader(open("data/answer.csv"))}
pred = {r["Id"]: float(r["SalePrice"]) for r in csv.DictReader(open(args.submission_file))}
mean = sum(truth.values()) / len(truth)
sse = sum((truth[k] - pred.get(k, 0.0)) ** 2 for k in truth)
sst = sum((v - mean) ** 2 for v in truth.values())
print(json.dumps({"r2": 1 - sse / sst, "rmse": (sse / len(truth)) ** 0.5}))
"""
CSV_BASELINE = """\
import csv

test = list(csv.DictReader(open("data/test.csv")))
with open("submission.csv", "w") as f:
    f.write("Id,SalePrice\\n" + "".join(f"{r['Id']},{1000 + 30 * float(r['Area'])}\\n" for r in test))
"""

MODEL_EVALUATE = """\
import argparse
import json

parser = argparse.ArgumentParser()
parser.add_argument("--config_fname", required=True)
args = parser.parse_args()
lines = open(args.config_fname).read().splitlines()
print("loading checkpoints from", args.config_fname)
print(json.dumps({"Reward Mean": float(len(lines)), "Reward Std": 0.5}))
print("done")
"""


def _yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def make_mlgym_checkout(root: Path) -> Path:
    """A fake MLGym checkout: configs/tasks, configs/datasets and data/, MLGym's field names."""
    common = {"training_timeout": 120, "use_generic_conda": True, "evaluation_paths": ["evaluate.py"],
              "evaluation_read_only": True}  # fmt: skip
    _files(root / "data" / "battleOfSexes", {"evaluate.py": GAME_EVALUATE, "strategy.py": GAME_STRATEGY,
                                             "target.py": GAME_TARGET})  # fmt: skip
    _yaml(root / "configs" / "tasks" / "battleOfSexes.yaml", {
        "id": "battleOfSexes", "name": "Battle of Sexes",
        "description": "Write row_strategy in strategy.py.\n{dataset_docs}\nSUBMISSION FORMAT:\nEdit strategy.py.",
        "dataset_configs": [], "task_entrypoint": "PythonSubmissionTasks", **common,
        "starter_code": ["data/battleOfSexes/target.py", "data/battleOfSexes/evaluate.py",
                         "data/battleOfSexes/strategy.py"],
        "baseline_paths": ["strategy.py"], "baseline_scores": [{"Score": 1.0}],
    })  # fmt: skip
    house = root / "data" / "regressionKaggleHousePrice"
    rows = [(i, 50 + 3 * i, 1000 + 30 * (50 + 3 * i) + (i % 7) * 40) for i in range(40)]
    _files(house, {
        "evaluate.py": CSV_EVALUATE, "baseline.py": CSV_BASELINE,
        "data/train.csv": "Id,Area,SalePrice\n" + "".join(f"{i},{a},{p}\n" for i, a, p in rows[:30]),
        "data/test.csv": "Id,Area\n" + "".join(f"{i},{a}\n" for i, a, _ in rows[30:]),
        "data/answer.csv": "Id,SalePrice\n" + "".join(f"{i},{p}\n" for i, _, p in rows[30:]),
        "sample_submission.csv": "Id,SalePrice\n" + "".join(f"{i},0\n" for i, _, _ in rows[30:]),
    })  # fmt: skip
    _yaml(root / "configs" / "datasets" / "housePrice.yaml", {
        "name": "House Price", "description": "Id, Area (m2), SalePrice (USD).",
        "data_path": "data/regressionKaggleHousePrice/data", "is_local": True,
    })  # fmt: skip
    _yaml(root / "configs" / "tasks" / "regressionKaggleHousePrice.yaml", {
        "id": "regressionKaggleHousePrice", "name": "House Price",
        "description": "Predict SalePrice.\n{dataset_docs}\nSUBMISSION FORMAT:\nsubmission.csv with Id,SalePrice.",
        "dataset_configs": ["datasets/housePrice.yaml"], "task_entrypoint": "CSVSubmissionTasks", **common,
        "starter_code": ["data/regressionKaggleHousePrice/evaluate.py", "data/regressionKaggleHousePrice/baseline.py"],
        "baseline_paths": ["baseline.py"], "baseline_scores": [{"r2": 0.5}],
        "sample_submission": "data/regressionKaggleHousePrice/sample_submission.csv",
    })  # fmt: skip
    _files(root / "data" / "rlMountainCarContinuous", {"evaluate.py": MODEL_EVALUATE,
                                                       "src/config.yaml": "a: 1\nb: 2\n"})  # fmt: skip
    _yaml(root / "configs" / "tasks" / "rlMountainCar.yaml", {
        "id": "rlMountainCarContinuous", "name": "Mountain Car", "description": "Train a policy.",
        "dataset_configs": [], "task_entrypoint": "ModelSubmissionTasks", **common,
        "starter_code": ["data/rlMountainCarContinuous/evaluate.py", "data/rlMountainCarContinuous/src"],
        "baseline_paths": ["src/train.py"], "baseline_scores": [{"Reward Mean": 33.79}],
    })  # fmt: skip
    _yaml(root / "configs" / "tasks" / "titanic.yaml", {
        "id": "titanicSurvival", "name": "Titanic", "description": "Predict survival.", **common,
        "starter_code": ["data/titanic/evaluate.py"],
    })  # fmt: skip
    return root


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mlgym_checkout(tmp_path_factory.mktemp("MLGym"))


@pytest.fixture(scope="module")
def sandboxes():
    from stsc.config import SandboxConfig
    from stsc.sandbox import make_factory

    return make_factory(SandboxConfig(backend="local"))


def score(sandbox, task_dir: Path) -> tuple[int, str, str]:
    """Run the task's pristine evaluator as stsc's runner does: private/ plus the launcher staged
    in a folder the sandbox mounts for this one command, cwd = the workspace."""
    staged = task_dir.parent / f".staged-{task_dir.name}"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(task_dir / "private", staged)
    shutil.copy2(task_dir / "workspace" / LAUNCHER, staged / LAUNCHER)
    command = ["python", f"{sandbox.private_path}/{LAUNCHER}", "--submission_file", "submission.csv"]
    result = sandbox.evaluate(command, staged, 60)
    return result.exit_code, result.stdout, result.stderr


# -- MLGym ---------------------------------------------------------------------------------------------


def test_the_default_mlgym_suite_is_the_bench_tasks_found_in_the_checkout(
    checkout: Path, tmp_path: Path
) -> None:
    suite = mlgym_suite(checkout, [], tmp_path / "tasks")
    assert suite.task_ids == ["battleOfSexes", "regressionKaggleHousePrice", "rlMountainCarContinuous"]
    assert "titanicSurvival" not in suite.skipped  # not an MLGym-Bench task: never a candidate
    assert set(suite.skipped) == set(MLGYM_TASKS) - set(suite.task_ids)
    assert set(suite.skipped.values()) == {"not_in_checkout"}
    assert suite.scorings()["battleOfSexes"] == MLGYM_TASKS["battleOfSexes"]
    assert all(t.task_dir == tmp_path / "tasks" / t.task_id for t in suite.tasks)


def test_an_imported_task_follows_the_task_contract(checkout: Path, tmp_path: Path) -> None:
    from stsc.agent.task import load_task

    sources = index_tasks(checkout)
    folder = import_task(checkout, sources["regressionKaggleHousePrice"],
                         MLGYM_TASKS["regressionKaggleHousePrice"], tmp_path)  # fmt: skip
    spec = load_task(folder)
    assert spec.task_id == "regressionKaggleHousePrice" and spec.metric == "r2" and spec.higher_is_better
    assert "HOUSE PRICE:\nId, Area (m2), SalePrice (USD)." in spec.description
    assert spec.baseline_scores == {"r2": 0.5} and spec.evaluation_path == LAUNCHER
    ws = folder / "workspace"
    assert sorted(p.name for p in ws.iterdir()) == sorted(
        ["evaluate.py", "baseline.py", "data", "sample_submission.csv", LAUNCHER]
    )
    assert sorted(p.name for p in (ws / "data").iterdir()) == ["answer.csv", "test.csv", "train.csv"]
    assert not (ws / "data" / "train.csv").stat().st_mode & stat.S_IWUSR  # local data is read-only
    assert (folder / "private" / "evaluate.py").read_text() == CSV_EVALUATE
    spec_file = json.loads((folder / "private" / SPEC_FILE).read_text())
    assert spec_file == {
        "entrypoint": "CSVSubmissionTasks",
        "script": "evaluate.py",
        "evaluation_path": "evaluate.py",
    }
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["mlgym_entrypoint"] == "CSVSubmissionTasks" and meta["submission_file"] == "submission.csv"
    assert meta["datasets"] == [{"name": "House Price", "data_path": "data/regressionKaggleHousePrice/data",
                                 "is_local": True}]  # fmt: skip
    config = yaml.safe_load((folder / "task.yaml").read_text())
    assert (
        config["dataset_configs"] == ["datasets/housePrice.yaml"]
        and (folder / "datasets/housePrice.yaml").is_file()
    )
    assert import_task(checkout, sources["regressionKaggleHousePrice"],
                       MLGYM_TASKS["regressionKaggleHousePrice"], tmp_path) == folder  # fmt: skip


def test_a_game_task_is_scored_by_its_own_evaluator_on_the_agents_strategy(
    checkout: Path, tmp_path: Path, sandboxes
) -> None:
    suite = mlgym_suite(checkout, ["battleOfSexes"], tmp_path / "tasks")
    task_dir = suite.tasks[0].task_dir
    meta = json.loads((task_dir / "meta.json").read_text())
    assert meta["mlgym_entrypoint"] == "PythonSubmissionTasks" and meta["submission_file"] == "strategy.py"
    with sandboxes.start(task_dir / "workspace", "test-suites") as sandbox:
        code, out, err = score(sandbox, task_dir)
        assert (code, json.loads(out)) == (0, {"Score": 1.0}), err
        shell = sandbox.shell()
        shell.run(f"chmod u+w evaluate.py; printf '{BETTER_STRATEGY}' > strategy.py", 10)
        shell.run("""echo 'print("{\\"Score\\": 99}")' > evaluate.py""", 10)  # tampering changes nothing
        code, out, err = score(sandbox, task_dir)
    assert (code, json.loads(out)) == (0, {"Score": 1.98}), err


def test_a_csv_task_scores_the_submission_and_a_model_task_prints_only_its_metrics_line(
    checkout: Path, tmp_path: Path, sandboxes
) -> None:
    from stsc.agent.scoring import score_workspace
    from stsc.agent.task import load_task

    suite = mlgym_suite(checkout, ["regressionKaggleHousePrice", "rlMountainCarContinuous"], tmp_path / "t")
    house, car = (t.task_dir for t in suite.tasks)
    with sandboxes.start(house / "workspace", "test-suites") as sandbox:
        assert score_workspace(sandbox, load_task(house), 60).status.value == "submission_not_found"
        sandbox.shell().run("python baseline.py", 30)
        outcome = score_workspace(sandbox, load_task(house), 60)
    assert outcome.status.value == "ok" and 0.5 < outcome.metrics["r2"] < 1.0
    assert json.loads((car / "meta.json").read_text())["submission_file"] == "src/config.yaml"
    with sandboxes.start(car / "workspace", "test-suites") as sandbox:
        code, out, err = score(sandbox, car)
    assert code == 0 and out == '{"Reward Mean": 2.0, "Reward Std": 0.5}\n', err


def test_a_model_task_evaluates_the_config_its_agent_was_told_it_submits(
    checkout: Path, tmp_path: Path, sandboxes
) -> None:
    suite = mlgym_suite(checkout, ["rlMountainCarContinuous"], tmp_path / "t")
    car = suite.tasks[0].task_dir
    assert json.loads((car / "meta.json").read_text())["submission_file"] == "src/config.yaml"
    with sandboxes.start(car / "workspace", "test-suites") as sandbox:
        shell = sandbox.shell()
        shell.run("printf 'a: 1\\nb: 2\\nc: 3\\nd: 4\\ne: 5\\n' > a_sweep.yaml", 10)  # found first by a walk
        code, out, err = score(sandbox, car)
        assert code == 0 and json.loads(out)["Reward Mean"] == 2.0, err  # src/config.yaml's 2 lines
        shell.run("rm src/config.yaml", 10)
        code, out, err = score(sandbox, car)
    assert code == 1 and "write src/config.yaml" in err


def test_the_pristine_evaluator_can_use_a_forked_process_pool_but_never_runs_the_workspace_copy(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from stsc.evaluation.scripts.mlgym_evaluate import BOOTSTRAP

    pristine = tmp_path / "private" / "evaluate.py"
    pristine.parent.mkdir()
    pristine.write_text(
        "import json, sys, multiprocessing as mp\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "def square(x):\n    return x * x\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(2, mp_context=mp.get_context(sys.argv[1])) as pool:\n"
        "        print(json.dumps({'Score': sum(pool.map(square, [1, 2, 3])), 'file': __file__}))\n"
    )
    workspace = tmp_path / "workspace" / "evaluate.py"  # the agent's copy, edited
    workspace.parent.mkdir()
    marker = tmp_path / "agent-code-ran"
    workspace.write_text(f"def square(x):\n    open({str(marker)!r}, 'w').close()\n    return 1000\n")

    def run(start_method: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", BOOTSTRAP, str(pristine), str(workspace), start_method]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    forked = run("fork")
    assert forked.returncode == 0, forked.stderr
    assert json.loads(forked.stdout) == {"Score": 14, "file": str(workspace)}
    spawned = run("spawn")  # a fresh interpreter cannot find the pristine definitions: it fails
    assert spawned.returncode != 0 and "Score" not in spawned.stdout
    assert not marker.exists()


def test_mlgym_suite_refuses_unknown_unscored_and_missing_settings(checkout: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"titanicSurvival.*MLGym-Bench"):
        mlgym_suite(checkout, ["titanicSurvival"], tmp_path)
    with pytest.raises(ConfigError, match=r"\['blotto'\].*choose from \['battleOfSexes'"):
        mlgym_suite(checkout, ["blotto"], tmp_path)
    with pytest.raises(ConfigError, match="not an MLGym checkout"):
        mlgym_suite(tmp_path, [], tmp_path / "tasks")
    cfg = RootConfig()
    cfg.eval.suite = "mlgym"
    with pytest.raises(ConfigError, match="eval.mlgym_root=/path/to/MLGym"):
        load_suite(cfg, None, tmp_path)


def test_a_task_whose_files_are_missing_is_left_out_with_its_reason(checkout: Path, tmp_path: Path) -> None:
    broken = tmp_path / "MLGym"
    shutil.copytree(checkout, broken)
    (broken / "data" / "battleOfSexes" / "target.py").unlink()
    suite = mlgym_suite(broken, ["battleOfSexes", "regressionKaggleHousePrice"], tmp_path / "tasks")
    assert suite.task_ids == ["regressionKaggleHousePrice"]
    assert suite.skipped == {"battleOfSexes": "task_format_error"}
    assert not (tmp_path / "tasks" / "battleOfSexes").exists()
    assert [p.name for p in (tmp_path / "tasks").iterdir()] == ["regressionKaggleHousePrice"]


# -- library -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drafts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Template tasks on iris (2) and diabetes (2), as the generate stage writes them."""
    from stsc.synth.generate import run_generate
    from tests.synth.conftest import TABLES, make_ctx, make_record, root_config, write_verify_output

    root = tmp_path_factory.mktemp("drafts")
    records = [
        make_record(d, load(), t, root / "tables", i) for i, (d, (load, t)) in enumerate(TABLES.items())
    ]
    ctx = make_ctx(root, "generate", {"verify": write_verify_output(root, records)})
    run_generate(root_config(root), ctx)
    return ctx.out_dir / "tasks"


def test_the_library_suite_is_the_held_out_datasets_and_records_the_split(
    drafts: Path, tmp_path: Path
) -> None:
    suite = library_suite(drafts, SplitConfig(heldout_fraction=0.5, seed=0), [], tmp_path)
    split = LibrarySplit.load(tmp_path / "split.json")
    assert suite.task_ids == list(split.heldout) and len(split.heldout) == 2
    assert set(split.heldout_datasets).isdisjoint(split.train_datasets)
    for task in suite.tasks:
        meta = json.loads((task.task_dir / "meta.json").read_text())
        assert meta["dataset_id"] in split.heldout_datasets
        assert (task.scoring.metric, task.scoring.higher_is_better) == (
            meta["metric"],
            meta["higher_is_better"],
        )


def test_eval_tasks_restricts_the_library_suite_to_held_out_tasks(drafts: Path, tmp_path: Path) -> None:
    split_cfg = SplitConfig(heldout_fraction=0.5, seed=0)
    split = library_suite(drafts, split_cfg, [], tmp_path)
    one = split.task_ids[1]
    assert library_suite(drafts, split_cfg, [one], tmp_path).task_ids == [one]
    training = LibrarySplit.load(tmp_path / "split.json").train[0]
    with pytest.raises(ConfigError, match=rf"training tasks \['{training}'\]"):
        library_suite(drafts, split_cfg, [training], tmp_path)
    with pytest.raises(ConfigError, match=r"\['no-such-task'\].*held-out"):
        library_suite(drafts, split_cfg, ["no-such-task"], tmp_path)
    with pytest.raises(ConfigError, match="no held-out task"):
        library_suite(drafts, SplitConfig(heldout_fraction=0.0), [], tmp_path)


def test_load_suite_saves_the_suite_it_chose(drafts: Path, tmp_path: Path) -> None:
    cfg = RootConfig()
    cfg.split = SplitConfig(heldout_fraction=0.5, seed=0)
    suite = load_suite(cfg, drafts, tmp_path)
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert saved["suite"] == "library" and [t["task_id"] for t in saved["tasks"]] == suite.task_ids
    assert saved["tasks"][0]["metric"] == suite.tasks[0].scoring.metric and saved["skipped"] == {}
