"""Fixtures of the evaluation tests: MLGym's published results and a writer of small run folders."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
MLGYM_TARBALL = DATA / "mlgym_results_9d40c1b.tar.gz"
GOLDEN = DATA / "evaluation"

# MLGym's aggregate table leaves out gemini-20-pro; these are the other 12 models of the tarball.
MLGYM_REPORTED_MODELS = [
    "metagen-claude-35-sonnet-new",
    "metagen-claude-37-sonnet",
    "metagen-deepseek-r1",
    "metagen-gemini-15-pro",
    "metagen-gemini-20-flash-thinking",
    "metagen-gemini-25-pro",
    "metagen-gpt-o1",
    "metagen-gpt-o3-mini",
    "metagen-gpt4o2",
    "metagen-llama3-405b-tools",
    "metagen-llama4-17b-128",
    "metagen-llama4-17b-16",
]


def extract_mlgym_results(dest: Path) -> Path:
    """Unpack the published ``results.json`` files into ``dest`` and return it."""
    with tarfile.open(MLGYM_TARBALL) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="session")
def mlgym_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention folder of MLGym's 676 published run folders."""
    return extract_mlgym_results(tmp_path_factory.mktemp("mlgym_runs"))


RunWriter = Callable[..., Path]


@pytest.fixture
def write_run(tmp_path: Path) -> RunWriter:
    """Write one run folder under ``tmp_path / "runs"`` and return its path.

    ``agent=None`` omits the key; ``results=False`` writes no ``results.json``; ``meta`` becomes
    ``stsc.json``.
    """

    def write(
        model: str,
        task: str,
        k: int = 0,
        agent: list[dict] | None = None,
        baseline: dict | None = None,
        *,
        results: bool = True,
        meta: dict | None = None,
        root: Path | None = None,
    ) -> Path:
        folder = (
            root or tmp_path / "runs"
        ) / f"{model}__{task}__default__t-0.00__p-0.95__c-4.00__install-0_run_{k}"
        folder.mkdir(parents=True)
        if results:
            payload: dict = {"baseline": baseline or {}}
            if agent is not None:
                payload["agent"] = agent
            (folder / "results.json").write_text(json.dumps(payload))
        if meta is not None:
            (folder / "stsc.json").write_text(json.dumps(meta))
        return folder

    return write
