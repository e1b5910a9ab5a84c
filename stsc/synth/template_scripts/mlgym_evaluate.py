"""MLGym entry point of a task exported from stsc.

The task's own scoring script is evaluate_task.py; it reads the held-out labels from the folder named
by STSC_PRIVATE_DIR. MLGym has no private area, so the export ships the labels in ./private next to
this file and points STSC_PRIVATE_DIR there unless the caller already set it. Usage and output are
those of evaluate_task.py: python evaluate.py --submission_file submission.csv prints one JSON line.
"""

import os
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "evaluate_task.py"

if __name__ == "__main__":
    if not os.environ.get("STSC_PRIVATE_DIR"):
        os.environ["STSC_PRIVATE_DIR"] = str(HERE / "private")
    sys.argv[0] = str(SCRIPT)
    runpy.run_path(str(SCRIPT), run_name="__main__")
