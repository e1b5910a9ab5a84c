"""Re-record the golden scoring tables of MLGym's published results.

    .venv/bin/python tests/evaluation/record_golden.py

Writes ``tests/data/evaluation/mlgym_{aup,best_scores,last_scores}.csv`` from
``tests/data/mlgym_results_9d40c1b.tar.gz`` for the pool of MLGym's 12 reported models (every model
of the tarball except ``metagen-gemini-20-pro``). Review the diff before committing it.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from stsc.evaluation.aup import compute_aup, write_aup_outputs
from stsc.evaluation.mlgym_tasks import MLGYM_TASKS
from stsc.evaluation.runs import load_runs

DATA = Path(__file__).resolve().parents[1] / "data"
EXCLUDED = "metagen-gemini-20-pro"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(DATA / "mlgym_results_9d40c1b.tar.gz") as tar:
            tar.extractall(tmp, filter="data")
        runs = load_runs(Path(tmp))
        pool = sorted({r.model for r in runs} - {EXCLUDED})
        result = compute_aup(runs, MLGYM_TASKS, pool)
        write_aup_outputs(result, Path(tmp) / "out", plot=False)
        for name in ("aup", "best_scores", "last_scores"):
            shutil.copyfile(Path(tmp) / "out" / f"{name}.csv", DATA / "evaluation" / f"mlgym_{name}.csv")
            print(f"recorded {DATA / 'evaluation' / f'mlgym_{name}.csv'}")


if __name__ == "__main__":
    main()
