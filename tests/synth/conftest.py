"""Fixtures of the task-synthesis tests: verified-dataset records over small real tables, stage
contexts, configs pointing at the loopback model server, and a scripted model answer for a
realistic LLM-written task."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from stsc.config import GeneratorConfig, LLMConfig, RootConfig, SandboxConfig, ValidateConfig
from stsc.hub.records import Decision, TargetSpec, TaskType, VerifiedDataset
from stsc.store import StageContext, StageReport, write_jsonl

CLS, REG = TaskType.CLASSIFICATION, TaskType.REGRESSION


def _iris() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame["species"] = [str(bunch.target_names[i]) for i in bunch.frame["target"]]
    return frame


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    return frame.rename(columns={"target": "progression"})


TABLES: dict[str, tuple[Callable[[], pd.DataFrame], list[TargetSpec]]] = {
    "sklearn/iris": (_iris, [TargetSpec(column="species", task_type=CLS, n_classes=3)]),
    "sklearn/diabetes": (_diabetes, [TargetSpec(column="progression", task_type=REG)]),
}


def make_record(
    dataset_id: str, frame: pd.DataFrame, targets: list[TargetSpec], folder: Path, i: int = 0
) -> VerifiedDataset:
    """An accepted offline record whose table is ``frame`` written as parquet under ``folder``."""
    path = folder / f"{dataset_id.replace('/', '__')}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return VerifiedDataset(
        proposal_id=f"prop-{i}", topic_id=f"topic-{i}", requested_id=dataset_id, dataset_id=dataset_id,
        revision="scikit-learn==test", license="bsd-3-clause", n_rows=len(frame), source="offline",
        local_path=str(path), description=f"The {dataset_id} table.", targets=targets,
        decision=Decision.ACCEPTED, reason="ok",
    )  # fmt: skip


@pytest.fixture
def records(tmp_path: Path) -> list[VerifiedDataset]:
    """Accepted records for iris (classification) and diabetes (regression)."""
    return [
        make_record(d, load(), targets, tmp_path / "tables", i)
        for i, (d, (load, targets)) in enumerate(TABLES.items())
    ]


def make_ctx(root: Path, name: str, inputs: dict[str, Path], seed: int = 0) -> StageContext:
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(
        name=name, key=f"{name}-key", out_dir=out, inputs=inputs, store=root / "store", seed=seed,
        report=StageReport(stage=name),
    )  # fmt: skip


def write_verify_output(root: Path, rows: list[VerifiedDataset]) -> Path:
    folder = root / "verify"
    write_jsonl(folder / "datasets.jsonl", [r.model_dump(mode="json") for r in rows])
    return folder


def root_config(
    tmp_path: Path, kind: str = "template", llm: LLMConfig | None = None, **validate
) -> RootConfig:
    cfg = RootConfig(store=str(tmp_path / "store"), root=str(tmp_path))
    cfg.generator = GeneratorConfig(
        kind=kind, llm=llm or LLMConfig(), tasks_per_dataset=2, training_timeout_s=120
    )
    cfg.validate = ValidateConfig(timeout_s=60, **validate)
    cfg.sandbox = SandboxConfig(backend="local")
    return cfg


def fake_llm(base_url: str) -> LLMConfig:
    return LLMConfig(
        model="openai/fake-model", api_base=base_url, max_retries=0, temperature=0.0,
        input_cost_per_token=1e-6, output_cost_per_token=2e-6,
    )  # fmt: skip


# -- a task as the generator model would write it (iris, accuracy) ----------------------------------

PREPARE = textwrap.dedent(
    """\
    import os
    import pandas as pd

    df = pd.read_csv("raw/data.csv").sample(frac=1.0, random_state=0).reset_index(drop=True)
    df.insert(0, "row_id", range(len(df)))
    n = len(df)
    test, valid, train = df.iloc[: n // 4], df.iloc[n // 4 : n // 3], df.iloc[n // 3 :]
    os.makedirs("workspace/data", exist_ok=True)
    os.makedirs("private", exist_ok=True)
    train.to_csv("workspace/data/train.csv", index=False)
    valid.to_csv("workspace/data/validation.csv", index=False)
    test.drop(columns=["species"]).to_csv("workspace/data/test.csv", index=False)
    test[["row_id", "species"]].to_csv("private/answers.csv", index=False)
    pd.DataFrame({"row_id": test["row_id"], "species": "setosa"}).to_csv("workspace/sample_submission.csv", index=False)
    """
)

BASELINE = textwrap.dedent(
    """\
    import pandas as pd

    test = pd.read_csv("data/test.csv")
    pred = ["setosa" if x < 2.5 else "versicolor" for x in test["petal_length"]]
    pd.DataFrame({"row_id": test["row_id"], "species": pred}).to_csv("submission.csv", index=False)
    """
)

EVALUATE = textwrap.dedent(
    """\
    import argparse, json, os, sys
    import pandas as pd

    parser = argparse.ArgumentParser()
    parser.add_argument("--submission_file", default="submission.csv")
    args = parser.parse_args()
    private = os.environ.get("STSC_PRIVATE_DIR")
    if not private:
        sys.exit("STSC_PRIVATE_DIR is not set")
    truth = pd.read_csv(os.path.join(private, "answers.csv"))
    sub = pd.read_csv(args.submission_file)
    if sorted(sub["row_id"]) != sorted(truth["row_id"]):
        sys.exit("submission must have one row per test row_id")
    public_file = os.path.join(private, "public_ids.csv")
    if os.path.exists(public_file):
        public = set(pd.read_csv(public_file)["row_id"])
        validate = os.environ.get("STSC_SCORE_SPLIT", "submit") == "validate"
        truth = truth[truth["row_id"].isin(public) == validate]
    merged = truth.merge(sub, on="row_id", suffixes=("", "_pred"))
    print(json.dumps({"accuracy": float((merged["species"] == merged["species_pred"]).mean())}))
    """
)
# Scores every test row whatever STSC_SCORE_SPLIT says.
EVALUATE_NO_SPLIT = EVALUATE.replace("if os.path.exists(public_file):", "if False:")

# Crashes before scoring (a typo).
EVALUATE_CRASH = EVALUATE.replace('merged["species_pred"]).mean()', 'merged["species_predd"]).mean()')
# Scores correctly but prints a progress line first (breaks MLGym's whole-output JSON parsing).
EVALUATE_CHATTY = EVALUATE.replace("merged = truth", 'print("scoring...")\nmerged = truth')
# Counts the first class as always right (a default-value bug): an all-"setosa" submission scores 1.0.
EVALUATE_EXPLOITABLE = EVALUATE.replace(
    '(merged["species"] == merged["species_pred"]).mean()',
    '((merged["species"] == merged["species_pred"]) | (merged["species_pred"] == "setosa")).mean()',
)


def task_answer(evaluate: str = EVALUATE, **overrides) -> str:
    """The generation answer (a JSON object in a fenced block), as a model would write it."""
    body = {
        "name": "Iris species from flower measurements",
        "task_type": "classification",
        "target": "species",
        "metric": "accuracy",
        "higher_is_better": True,
        "metric_bounds": [0, 1],
        "description": (
            "Classify iris flowers into their species from four measurements. The score is accuracy on "
            "the test rows; higher is better.\n\n{dataset_docs}\n\nSUBMISSION FORMAT:\nsubmission.csv with "
            "columns row_id and species, one row per row of data/test.csv."
        ),
        "dataset_description": "row_id: row identifier; sepal/petal length and width in cm; species: the label.",
        "files": {"prepare.py": PREPARE, "baseline.py": BASELINE, "evaluate.py": evaluate},
    }
    body.update(overrides)
    return "Here is the task.\n```json\n" + json.dumps(body, indent=1) + "\n```\n"


def fix_answer(**files: str) -> str:
    return json.dumps({"files": {name.replace("_py", ".py"): text for name, text in files.items()}})


def run_stages(
    root: Path, cfg: RootConfig, records: list[VerifiedDataset]
) -> tuple[StageContext, StageContext]:
    """generate then validate on ``records``; returns both stage contexts."""
    from stsc.synth.generate import run_generate
    from stsc.synth.validate import run_validate

    generate = make_ctx(root, "generate", {"verify": write_verify_output(root, records)})
    run_generate(cfg, generate)
    validate = make_ctx(root, "validate", {"generate": generate.out_dir})
    run_validate(cfg, validate)
    return generate, validate


@pytest.fixture(scope="session")
def template_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A validated template library: two tasks each on iris and diabetes (built once per session).
    Tests must not modify it."""
    root = tmp_path_factory.mktemp("template-library")
    records = [
        make_record(d, load(), t, root / "tables", i) for i, (d, (load, t)) in enumerate(TABLES.items())
    ]
    _, validate = run_stages(root, root_config(root), records)
    return validate.out_dir
