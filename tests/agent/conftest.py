"""Fixtures of the agent tests: a small real task folder, the local sandbox and LLM policies
pointed at the loopback OpenAI-compatible server."""

from __future__ import annotations

import csv
import json
import random
import textwrap
from pathlib import Path

import pytest

TASK_ID = "toyClassification"

EVALUATE_PY = '''\
"""Accuracy of submission.csv against the held-out labels in $STSC_PRIVATE_DIR/answers.csv."""

import argparse
import csv
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--submission_file", default="submission.csv")
args = parser.parse_args()
private = os.environ.get("STSC_PRIVATE_DIR")
if not private:
    sys.exit("STSC_PRIVATE_DIR is not set: run this through the sandbox's evaluate step")
with open(os.path.join(private, "answers.csv")) as f:
    answers = {row["id"]: row["label"] for row in csv.DictReader(f)}
with open(args.submission_file) as f:
    submitted = {row["id"]: row["label"] for row in csv.DictReader(f)}
correct = sum(submitted.get(key) == label for key, label in answers.items())
print(json.dumps({"accuracy": correct / len(answers)}))
'''

BASELINE_PY = '''\
"""Baseline: predict class 1 when feature x1 is positive (a one-feature rule, no training)."""

import csv

with open("data/test.csv") as f:
    rows = list(csv.DictReader(f))
with open("submission.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "label"])
    for row in rows:
        writer.writerow([row["id"], int(float(row["x1"]) > 0)])
'''

DESCRIPTION = textwrap.dedent(
    """\
    Predict the binary label of each row from two numeric features and a colour. This is a
    classification task scored by accuracy on held-out rows.

    {dataset_docs}
    SUBMISSION FORMAT:
    Write submission.csv with columns id and label (0 or 1), one row per row of data/test.csv."""
)


def _rows(rng: random.Random, n: int, start: int) -> list[dict[str, object]]:
    rows = []
    for i in range(n):
        x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
        colour = rng.choice(["red", "green", "blue"])
        signal = 0.6 * x1 + 1.2 * x2 + (0.8 if colour == "red" else 0.0) + rng.gauss(0, 0.3)
        rows.append(
            {
                "id": str(start + i),
                "x1": round(x1, 4),
                "x2": round(x2, 4),
                "colour": colour,
                "label": int(signal > 0.2),
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, object]], columns: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def make_toy_task(root: Path, task_id: str = TASK_ID, training_timeout: int = 120) -> Path:
    """A complete task folder (the task contract of DESIGN.md) with a weak, pure-python baseline."""
    import yaml

    rng = random.Random(0)
    train, valid, test = _rows(rng, 240, 0), _rows(rng, 80, 1000), _rows(rng, 100, 2000)
    task = root / task_id
    ws = task / "workspace"
    features = ["id", "x1", "x2", "colour"]
    _write_csv(ws / "data" / "train.csv", train, features + ["label"])
    _write_csv(ws / "data" / "validation.csv", valid, features + ["label"])
    _write_csv(ws / "data" / "test.csv", test, features)
    _write_csv(ws / "sample_submission.csv", [{"id": r["id"], "label": 0} for r in test], ["id", "label"])
    _write_csv(task / "private" / "answers.csv", test, ["id", "label"])
    (ws / "evaluate.py").write_text(EVALUATE_PY)
    (ws / "baseline.py").write_text(BASELINE_PY)
    baseline = sum(int(float(r["x1"]) > 0) == r["label"] for r in test) / len(test)
    (task / "datasets").mkdir()
    dataset = {
        "name": "toy",
        "description": "x1, x2: numeric features; colour: red/green/blue; label: 0/1",
        "data_path": "data",
        "is_local": True,
    }
    (task / "datasets" / "toy.yaml").write_text(yaml.safe_dump(dataset, sort_keys=False))
    config = {
        "id": task_id,
        "name": "Toy classification",
        "description": DESCRIPTION,
        "dataset_configs": ["datasets/toy.yaml"],
        "task_entrypoint": "CSVSubmissionTasks",
        "training_timeout": training_timeout,
        "use_generic_conda": True,
        "starter_code": ["workspace/baseline.py", "workspace/evaluate.py"],
        "baseline_paths": ["baseline.py"],
        "baseline_scores": [{"accuracy": baseline}],
        "sample_submission": "workspace/sample_submission.csv",
        "evaluation_paths": ["evaluate.py"],
        "evaluation_read_only": True,
    }
    (task / "task.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    meta = {
        "schema_version": 1,
        "task_id": task_id,
        "task_type": "classification",
        "target": "label",
        "metric": "accuracy",
        "higher_is_better": True,
        "metric_bounds": [0, 1],
        "baseline_score": baseline,
    }
    (task / "meta.json").write_text(json.dumps(meta, indent=2))
    return task


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy task folder (shared, read-only: episodes copy its workspace into a sandbox)."""
    return make_toy_task(tmp_path_factory.mktemp("tasks"))


def command(cmd: str, discussion: str = "Next step.") -> str:
    """A well-formed agent response running ``cmd``."""
    return f"DISCUSSION\n{discussion}\n\n```\n{cmd}\n```"


@pytest.fixture(scope="session")
def sandbox_factory():
    """The local sandbox backend, as episodes use it."""
    from stsc.config import SandboxConfig
    from stsc.sandbox import make_factory

    return make_factory(SandboxConfig(backend="local"))


@pytest.fixture
def llm_policy(openai_server):
    """Build an ``llm`` policy talking to the loopback server (no cache, no retries by default)."""
    from stsc.agent.policies import make_policy
    from stsc.config import LLMConfig, PolicyConfig

    def build(budget_usd: float | None = None, **llm: object):
        settings = {
            "model": "openai/fake-model",
            "api_base": openai_server.base_url,
            "cache": False,
            "max_retries": 0,
            "backoff_s": 0.01,
            "timeout_s": 30.0,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0,
        }
        settings.update(llm)
        cfg = PolicyConfig(kind="llm", name="fake", llm=LLMConfig(**settings))
        return make_policy(cfg, budget_usd=budget_usd)

    return build
