"""Re-record the curate golden files (trajectory -> SFT rows).

    .venv/bin/python tests/curate/record_golden.py            # expected rows from the stored run
    .venv/bin/python tests/curate/record_golden.py --episode  # first re-run the episode itself

``--episode`` rebuilds ``tests/data/curate/library/<task>/`` (a small classification task written
with the synthesis room's task writer) and runs one real episode on it: the episode loop, the local
sandbox and the trajectory writer, with a replay policy that answers with the fixed responses below
(the model boundary). The run folder lands in ``tests/data/curate/runs/`` (its ``stsc.json``
``run_dir`` is made repo-relative).

Without ``--episode`` the stored run is curated with every variant of ``VARIANTS`` and each
``sft.jsonl`` is copied to ``tests/data/curate/expected/<variant>.jsonl``. Review the diff before
committing it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.curate.golden import DATA, RUNS, TASK_ID, VARIANTS, curate_variant  # noqa: E402

MODEL = "replay-teacher"

TRAIN_PY = """\
import csv


def score(row):
    red = 0.8 if row["colour"] == "red" else 0.0
    return 0.6 * float(row["x1"]) + 1.2 * float(row["x2"]) + red


with open("data/validation.csv") as f:
    valid = list(csv.DictReader(f))
correct = sum(int(score(r) > 0.2) == int(r["label"]) for r in valid)
print(f"validation accuracy: {correct / len(valid):.4f}")
with open("data/test.csv") as f:
    test = list(csv.DictReader(f))
with open("submission.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "label"])
    for r in test:
        writer.writerow([r["id"], int(score(r) > 0.2)])
"""

RESPONSES = [
    "<think>\nNothing is known yet; the files will tell me the data layout.\n</think>\n"
    "DISCUSSION\nI start by listing the workspace to see the baseline, the evaluation script and the data.\n\n"
    "```\nls -la\n```",
    "DISCUSSION\nThe baseline is the reference to beat; I read it to see which features it uses.\n\n"
    "```\ncat baseline.py\n```",
    "DISCUSSION\nThe baseline only thresholds x1. I look at the training data to see the other columns.\n\n"
    "```\nhead -n 6 data/train.csv\n```",
    "DISCUSSION\nI run the baseline to produce a first submission.\n\n```\npython baseline.py\n```",
    "DISCUSSION\nI validate the baseline submission to know the score to beat.\n\n```\nvalidate\n```",
    "<think>\nx2 and the colour look informative; a linear rule over all three features should help.\n"
    "</think>\nDISCUSSION\nI write a script that scores every row with a linear rule over x1, x2 and the "
    "colour, reports the validation accuracy and writes the submission.\n\n"
    f"```\ncat > train.py << 'EOF'\n{TRAIN_PY}EOF\n```",
    "DISCUSSION\nI run the new script.\n\n```\npython train.py\n```",
    "DISCUSSION\nThe validation accuracy is well above the baseline's; I validate the new submission.\n\n"
    "```\nvalidate\n```",
    "DISCUSSION\nThe new submission beats the baseline, so I submit it.\n\n```\nsubmit\n```",
]


class ReplayPolicy:
    """Answers step k with ``RESPONSES[k]`` (k = the teacher turns already in the messages)."""

    name = MODEL

    async def act(self, messages: list[dict[str, str]], *, seed: int):
        from stsc.agent.policies import PolicyReply

        turn = sum(1 for m in messages if m["role"] == "assistant")
        return PolicyReply(text=RESPONSES[turn], prompt_tokens=0, completion_tokens=0, cost_usd=0.0)


def _rows(rng: random.Random, n: int, start: int) -> list[dict]:
    rows = []
    for i in range(n):
        x1, x2 = round(rng.gauss(0, 1), 3), round(rng.gauss(0, 1), 3)
        colour = rng.choice(["red", "green", "blue"])
        signal = 0.6 * x1 + 1.2 * x2 + (0.8 if colour == "red" else 0.0) + rng.gauss(0, 0.3)
        rows.append({"id": str(start + i), "x1": x1, "x2": x2, "colour": colour, "label": int(signal > 0.2)})
    return rows


def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_library_task(library: Path) -> Path:
    """The golden task, written with ``stsc.synth.task.write_task``."""
    from stsc.synth.task import DatasetConfig, TaskConfig, TaskDraft, TaskMeta, write_task
    from tests.agent.conftest import BASELINE_PY, EVALUATE_PY

    rng = random.Random(0)
    train, valid, test = _rows(rng, 60, 0), _rows(rng, 30, 1000), _rows(rng, 40, 2000)
    features = ["id", "x1", "x2", "colour"]
    baseline = sum(int(r["x1"] > 0) == r["label"] for r in test) / len(test)
    description = textwrap.dedent(
        """\
        Predict the binary label of each row from two numeric features and a colour. The task is
        classification, scored by accuracy on held-out rows.

        {dataset_docs}
        SUBMISSION FORMAT:
        Write submission.csv with columns id and label (0 or 1), one row per row of data/test.csv."""
    )
    draft = TaskDraft(
        config=TaskConfig(
            id=TASK_ID,
            name="Colour rule classification",
            description=description,
            dataset_configs=["datasets/colour_rule.yaml"],
            training_timeout=120,
            starter_code=["workspace/baseline.py", "workspace/evaluate.py"],
            baseline_scores=[{"accuracy": baseline}],
        ),
        datasets=[
            DatasetConfig(
                name="colour_rule",
                description="id: row id; x1, x2: numeric features; colour: red, green or blue; label: 0 or 1",
                data_path="data",
            )
        ],
        meta=TaskMeta(
            task_id=TASK_ID,
            topic_id="golden-topic",
            topic_title="Rules over mixed features",
            area="tabular",
            dataset_id="stsc/colour-rule",
            dataset_revision=None,
            license="cc0-1.0",
            task_type="classification",
            target="label",
            metric="accuracy",
            higher_is_better=True,
            metric_bounds=(0.0, 1.0),
            baseline_score=baseline,
            generator="hand-written",
        ),
        files={
            "workspace/evaluate.py": EVALUATE_PY,
            "workspace/baseline.py": BASELINE_PY,
            "workspace/data/train.csv": _csv(train, features + ["label"]),
            "workspace/data/validation.csv": _csv(valid, features + ["label"]),
            "workspace/data/test.csv": _csv(test, features),
            "workspace/sample_submission.csv": _csv(
                [{"id": r["id"], "label": 0} for r in test], ["id", "label"]
            ),
            "private/answers.csv": _csv(test, ["id", "label"]),
        },
    )
    shutil.rmtree(library / TASK_ID, ignore_errors=True)
    return write_task(library / TASK_ID, draft)


def record_episode() -> None:
    from stsc.agent import run_episode, run_folder_name
    from stsc.config import AgentConfig, SandboxConfig
    from stsc.sandbox import make_factory

    task = write_library_task(DATA / "library")
    shutil.rmtree(RUNS, ignore_errors=True)
    cfg = AgentConfig(max_steps=20)
    run_dir = RUNS / run_folder_name(MODEL, TASK_ID, cfg.name, 0.0, 0.95, cfg.cost_limit_usd, 0)
    result = asyncio.run(
        run_episode(
            task,
            ReplayPolicy(),
            make_factory(SandboxConfig(backend="local")),
            cfg,
            run_dir,
            seed=0,
            label="golden",
        )
    )
    meta = json.loads((run_dir / "stsc.json").read_text())
    meta["run_dir"] = str(run_dir.relative_to(REPO))  # keep the committed data machine-independent
    (run_dir / "stsc.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"recorded {run_dir.relative_to(REPO)}: {result.exit_status}, scores {result.scores}")


def record_expected() -> None:
    (DATA / "expected").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            out = curate_variant(variant, Path(tmp) / variant)
            target = DATA / "expected" / f"{variant}.jsonl"
            shutil.copyfile(out / "sft.jsonl", target)
            rows = [json.loads(line) for line in target.read_text().splitlines()]
            print(f"recorded {target.relative_to(REPO)} ({len(rows)} row(s))")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episode", action="store_true", help="re-run the golden episode first")
    args = parser.parse_args()
    if args.episode:
        record_episode()
    record_expected()


if __name__ == "__main__":
    main()
