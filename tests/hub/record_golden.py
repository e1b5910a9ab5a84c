"""Re-record the golden verdicts of the stored Hub metadata.

    .venv/bin/python tests/hub/record_golden.py

Reads every Hub API object under ``tests/data/hub/datasets/`` and writes
``tests/data/hub/verdicts.json``: per dataset id, the normalised ``DatasetMeta`` and the verdict
of the default ``dataset_filter``. Review the diff before committing it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stsc.config import DatasetFilterConfig  # noqa: E402
from stsc.hub.huggingface import meta_from_hub  # noqa: E402
from stsc.hub.rules import judge  # noqa: E402
from tests.fakes.hub_server import HUB_DATA, load_hub_datasets  # noqa: E402

GOLDEN = HUB_DATA.parent / "verdicts.json"


def verdicts() -> dict[str, dict]:
    """id -> {"reason": ..., "meta": ...} for every stored Hub object, under the default rules."""
    out = {}
    for data in load_hub_datasets():
        meta = meta_from_hub(data)
        out[meta.id] = {
            "reason": judge(meta, DatasetFilterConfig()).reason,
            "meta": meta.model_dump(mode="json"),
        }
    return out


def main() -> None:
    GOLDEN.write_text(json.dumps(verdicts(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
