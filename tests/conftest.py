"""Test-wide setup: offline, telemetry-free environment set before any heavy library is imported,
and the loopback fakes registered as plugins."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HF_HOME = Path(tempfile.mkdtemp(prefix="stsc-test-hf-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(_HF_HOME),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TOKENIZERS_PARALLELISM": "false",
        # any MLflow call that names no store goes to a temp one, never to ./mlflow.db
        "MLFLOW_TRACKING_URI": f"sqlite:///{_HF_HOME / 'default-mlflow.db'}",
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0"),
    }
)

pytest_plugins = ["tests.fakes.openai_server"]

REPO_ROOT = Path(__file__).resolve().parents[1]
