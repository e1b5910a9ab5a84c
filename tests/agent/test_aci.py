"""The agent-computer interface on the local sandbox: every command, the lint gate, timeouts and
scoring with the pristine evaluator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stsc.agent.aci import AgentComputerInterface
from stsc.agent.task import load_task
from stsc.config import AgentConfig


@pytest.fixture
def make_aci(toy_task: Path, sandbox_factory) -> Iterator:
    opened = []

    def make(**cfg: object) -> AgentComputerInterface:
        sandbox = sandbox_factory.start(toy_task / "workspace", "test-aci")
        aci = AgentComputerInterface(sandbox, load_task(toy_task), AgentConfig(**{"window": 10, **cfg}))
        opened.append((aci, sandbox))
        return aci

    yield make
    for aci, sandbox in opened:
        aci.close()
        sandbox.close()


@pytest.fixture
def aci(make_aci) -> AgentComputerInterface:
    return make_aci()


def run(aci: AgentComputerInterface, action: str) -> str:
    observation = aci.execute(action)
    assert not observation.done
    return observation.text


def test_the_shell_keeps_directory_and_variables_between_commands(aci) -> None:
    assert "did not produce any output" in run(aci, "cd data && export SPLIT=train")
    out = run(aci, 'pwd && echo "$SPLIT"')
    assert out.splitlines()[0].endswith("/workspace/data")
    assert out.splitlines()[1] == "train"
    assert aci.state["working_dir"].endswith("/workspace/data")
    assert aci.state["open_file"] == "n/a"


def test_a_failing_silent_command_reports_its_status(aci) -> None:
    assert run(aci, "false") == "Your command exited with status 1 and did not produce any output."


def test_open_goto_and_scroll_show_a_numbered_window(aci) -> None:
    run(aci, 'for i in $(seq 1 30); do echo "line $i"; done > notes.txt')
    first = run(aci, 'open "notes.txt"').splitlines()
    assert first[0].endswith("/workspace/notes.txt (30 lines total)]")
    assert first[1:3] == ["1:line 1", "2:line 2"]
    assert first[-2:] == ["10:line 10", "(20 more lines below)"]
    assert aci.state["open_file"].endswith("/workspace/notes.txt")
    middle = run(aci, "open notes.txt 20").splitlines()
    assert (
        middle[1] == "(15 more lines above)"
        and middle[2] == "16:line 16"
        and middle[-1] == "(5 more lines below)"
    )
    end = run(aci, "goto 30").splitlines()
    assert end[1] == "(20 more lines above)" and end[-1] == "30:line 30"
    up = run(aci, "scroll_up").splitlines()
    assert up[2] == "11:line 11" and up[-2] == "20:line 20"
    up = run(aci, "scroll_up").splitlines()
    assert up[1] == "1:line 1" and up[-2] == "10:line 10"
    down = run(aci, "scroll_down").splitlines()
    assert down[2] == "11:line 11" and down[-2] == "20:line 20"


def test_viewer_misuse_is_explained(aci) -> None:
    assert "No file is open" in run(aci, "goto 3")
    assert "No file is open" in run(aci, "scroll_down")
    assert "not found" in run(aci, 'open "missing.py"')
    run(aci, "open baseline.py")
    assert "not a line number" in run(aci, "goto three")
    assert "Usage: open" in run(aci, "open")


def test_create_makes_and_opens_an_empty_file_once(aci) -> None:
    out = run(aci, "create src/model.py")
    assert out.splitlines() == [f"[File: {aci.editor.open_file} (1 lines total)]", "1:"]
    assert aci.state["open_file"].endswith("/workspace/src/model.py")
    assert "already exists" in run(aci, "create src/model.py")


def test_edit_replaces_lines_and_insert_adds_them(aci) -> None:
    run(aci, "create util.py")
    out = run(aci, "edit 1:1\ndef double(x):\n    return 2 * x\nend_of_edit")
    assert "File updated" in out and "2:    return 2 * x" in out
    out = run(aci, "insert 0\nimport math\n\nend_of_insert")
    assert out.splitlines()[1] == "1:import math"
    run(aci, "edit 4:4\n    return math.floor(2 * x)\nend_of_edit")
    assert run(aci, "cat util.py") == "import math\n\ndef double(x):\n    return math.floor(2 * x)\n"
    assert "File updated" in run(aci, "edit 2:2\nend_of_edit")
    assert run(aci, "head -n 2 util.py") == "import math\ndef double(x):\n"
    assert "NOT applied" in run(aci, "edit 1:1\nend_of_edit")  # math would become undefined


def test_a_python_edit_that_adds_lint_errors_is_reverted_showing_both_views(aci) -> None:
    run(aci, "create util.py")
    run(aci, "edit 1:1\ndef double(x):\n    return 2 * x\nend_of_edit")
    out = run(aci, "edit 2:2\n    return 2 * y\nend_of_edit")
    assert "NOT applied" in out
    assert "F821 undefined name 'y'" in out
    would, now = out.split("This is the file as it is now (unchanged):")
    assert "2:    return 2 * y" in would
    assert "2:    return 2 * x" in now
    assert run(aci, "cat util.py") == "def double(x):\n    return 2 * x\n"
    bad_indent = run(aci, "edit 2:2\n  return 2 * x\n     z = 1\nend_of_edit")
    assert "NOT applied" in bad_indent and ("E111" in bad_indent or "E999" in bad_indent)


def test_errors_already_in_a_file_do_not_block_unrelated_edits(aci) -> None:
    run(aci, "printf 'print(undefined_a)\\nx = 1\\n' > legacy.py")
    run(aci, "open legacy.py")
    out = run(aci, "edit 2:2\nx = 2\nend_of_edit")
    assert "File updated" in out
    assert run(aci, "cat legacy.py") == "print(undefined_a)\nx = 2\n"


def test_non_python_files_are_not_linted(aci) -> None:
    run(aci, "create notes.md")
    assert "File updated" in run(aci, "edit 1:1\nundefined names are fine here: y(\nend_of_edit")


def test_edit_misuse_is_explained(aci) -> None:
    assert "No file is open" in run(aci, "edit 1:1\nx\nend_of_edit")
    run(aci, "open baseline.py")
    assert "must end with a line `end_of_edit`" in run(aci, "edit 1:1\nx = 1")
    assert "Invalid range" in run(aci, "edit 40:41\nx = 1\nend_of_edit")
    assert "Usage: edit" in run(aci, "edit 3\nx = 1\nend_of_edit")
    assert "Invalid line" in run(aci, "insert 99\nx = 1\nend_of_insert")
    assert "takes no lines" in run(aci, "validate\nls")
    assert "takes no arguments" in run(aci, "submit now")


def test_search_and_find_commands(aci) -> None:
    out = run(aci, "search_dir colour")
    assert out.startswith("Found ") and "data/train.csv (1 matches)" in out and out.endswith("/workspace")
    assert run(aci, "search_dir zebra_stripes").startswith('No matches found for "zebra_stripes"')
    out = run(aci, "search_dir writer baseline.py")  # a single file is listed by name too
    assert out.splitlines()[1] == f"{aci.sandbox.workspace}/baseline.py (3 matches)"
    out = run(aci, "search_file writer baseline.py")
    assert 'Found 3 matches for "writer"' in out and "Line 8:    writer = csv.writer(f)" in out
    run(aci, "open baseline.py")
    assert "Line 3:import csv" in run(aci, 'search_file "import csv"')
    out = run(aci, 'find_file "*.csv"')
    assert out.startswith('Found 4 matches for "*.csv"')
    assert "data/validation.csv" in out and "sample_submission.csv" in out
    assert run(aci, "find_file nothing.txt data").startswith('No matches found for "nothing.txt"')


def test_validate_scores_the_submission_and_shows_the_baseline(aci, toy_task: Path) -> None:
    assert "No submission file found" in run(aci, "validate")
    assert aci.scores == []
    run(aci, "python baseline.py")
    out = run(aci, "validate").splitlines()
    baseline = load_task(toy_task).baseline_scores
    assert out[1] == f"Baseline Score: {json.dumps(baseline)}"
    assert out[2] == f"Evaluation Score: {json.dumps(baseline)}"
    assert aci.scores == [baseline]


SPLIT_EVALUATE_PY = """\
import json
import os
import sys

assert os.path.exists(os.path.join(os.environ["STSC_PRIVATE_DIR"], "answers.csv"))
if not os.path.exists("submission.csv"):
    sys.exit("no submission")
split = os.environ.get("STSC_SCORE_SPLIT")
print(json.dumps({"accuracy": {"validate": 0.25, "submit": 0.75}[split]}))
"""


def test_validate_with_a_public_split_shows_public_rows_and_records_the_rest(
    toy_task: Path, tmp_path: Path, sandbox_factory
) -> None:
    import shutil

    task_dir = tmp_path / "split-task"
    shutil.copytree(toy_task, task_dir)
    (task_dir / "workspace" / "evaluate.py").write_text(SPLIT_EVALUATE_PY)
    meta = json.loads((task_dir / "meta.json").read_text())
    meta.update(public_split=True, public_baseline_scores={"accuracy": 0.2})
    (task_dir / "meta.json").write_text(json.dumps(meta))
    task = load_task(task_dir)
    assert task.public_split and task.public_baseline_scores == {"accuracy": 0.2}
    with sandbox_factory.start(task_dir / "workspace", "test-aci") as sandbox:
        aci = AgentComputerInterface(sandbox, task, AgentConfig())
        run(aci, "python baseline.py")
        out = run(aci, "validate").splitlines()
        assert out[1].startswith("Scores are on the public test rows")
        assert out[2] == 'Baseline Score: {"accuracy": 0.2}'
        assert out[3] == 'Evaluation Score: {"accuracy": 0.25}'
        assert aci.scores == [{"accuracy": 0.75}]  # recorded: the final rows' score, never shown
        submitted = aci.execute("submit")
        assert submitted.text == 'Submission scored: {"accuracy": 0.75}'
        assert aci.scores == [{"accuracy": 0.75}, {"accuracy": 0.75}]
        aci.close()


def test_scoring_uses_the_pristine_evaluator_and_keeps_labels_out_of_the_workspace(
    aci, toy_task: Path
) -> None:
    run(aci, "python baseline.py")
    run(aci, """printf 'import json\\nprint(json.dumps({"accuracy": 1.0}))\\n' > evaluate.py""")
    assert "1.0" in run(aci, "python evaluate.py")
    real = load_task(toy_task).baseline_scores["accuracy"]
    assert f'Evaluation Score: {{"accuracy": {real}}}' in run(aci, "validate")
    run(aci, "rm evaluate.py")
    assert f'Evaluation Score: {{"accuracy": {real}}}' in run(aci, "validate")
    assert run(aci, 'echo "[${STSC_PRIVATE_DIR}]"').strip() == "[]"
    assert "answers" not in run(aci, "ls -R . ; ls /run/stsc/private 2>&1 || true")


def test_an_evaluator_that_crashes_is_an_evaluation_format_error(aci) -> None:
    run(aci, "printf 'row,guess\\n1,2\\n' > submission.csv")  # no id column: evaluate.py raises KeyError
    assert "could not be evaluated" in run(aci, "validate")
    assert aci.autosubmit("max_steps") == "evaluation_format_error (max_steps)"
    submitted = aci.execute("submit")
    assert submitted.done and submitted.exit_status == "evaluation_format_error (submit)"
    assert submitted.text.startswith("evaluation_format_error (submit): The evaluation failed (exit code")
    assert aci.scores == []


@pytest.fixture
def task_with_evaluator(toy_task: Path, tmp_path: Path, sandbox_factory) -> Iterator:
    """``make(evaluate_py, **agent_cfg)``: an ACI on a copy of the toy task whose pristine
    evaluate.py is ``evaluate_py``, with the baseline's submission already written."""
    import shutil

    opened = []

    def make(evaluate_py: str, **cfg: object) -> AgentComputerInterface:
        task_dir = tmp_path / f"task-{len(opened)}"
        shutil.copytree(toy_task, task_dir)
        (task_dir / "workspace" / "evaluate.py").write_text(evaluate_py)
        sandbox = sandbox_factory.start(task_dir / "workspace", "test-aci")
        aci = AgentComputerInterface(sandbox, load_task(task_dir), AgentConfig(**cfg))
        opened.append((aci, sandbox))
        run(aci, "python baseline.py")
        return aci

    yield make
    for aci, sandbox in opened:
        aci.close()
        sandbox.close()


@pytest.mark.parametrize(
    ("printed", "reason"),
    [
        ("accuracy: 0.5", "the output is not one JSON object (Expecting value)"),
        ("[0.5]", "the output is JSON but a list, not an object"),
    ],
)
def test_evaluation_output_that_is_not_one_json_object_is_an_evaluation_format_error(
    task_with_evaluator, printed: str, reason: str
) -> None:
    aci = task_with_evaluator(f"print({printed!r})\n")
    detail = f"The evaluation output could not be read: {reason}. Output:\n{printed}"
    assert run(aci, "validate") == f"Your submission could not be evaluated. {detail}"
    assert aci.autosubmit("max_steps") == "evaluation_format_error (max_steps)"
    submitted = aci.execute("submit")
    assert submitted.done and submitted.exit_status == "evaluation_format_error (submit)"
    assert submitted.text == f"evaluation_format_error (submit): {detail}"
    assert aci.scores == [] and aci.submission is None


def test_an_evaluation_over_the_training_timeout_is_an_evaluation_format_error(task_with_evaluator) -> None:
    aci = task_with_evaluator(
        'import json, time\ntime.sleep(30)\nprint(json.dumps({"accuracy": 1.0}))\n', training_timeout_s=1.0
    )
    started = time.monotonic()
    out = run(aci, "validate")
    assert time.monotonic() - started < 15
    assert out == "Your submission could not be evaluated. The evaluation did not finish within 1 s."
    assert aci.scores == [] and aci.submission is None


def test_a_submission_linking_outside_the_workspace_is_not_scored(make_aci) -> None:
    # the evaluation mounts the private folder: a link leaving the workspace could reach the labels
    aci = make_aci()
    run(
        aci,
        "python baseline.py && mv submission.csv /tmp/elsewhere.csv && ln -s /tmp/elsewhere.csv submission.csv",
    )
    out = run(aci, "validate")
    assert "submission.csv links to /tmp/elsewhere.csv, outside the workspace" in out
    assert aci.scores == [] and aci.submission is None
    run(
        aci,
        "rm submission.csv && mkdir -p out && cp /tmp/elsewhere.csv out/sub.csv && ln -s out/sub.csv submission.csv",
    )
    assert run(aci, "validate").startswith("Your code produced a valid submission")  # a link inside is fine
    assert len(aci.scores) == 1


def test_submit_ends_the_episode_with_the_mlgym_status(make_aci) -> None:
    missing = make_aci().execute("submit")
    assert missing.done and missing.exit_status == "submission_not_found (submit)"
    aci = make_aci()
    run(aci, "python baseline.py")
    done = aci.execute("submit")
    assert done.done and done.exit_status == "submitted"
    assert done.text.startswith("Submission scored: {")
    assert aci.submission is not None and aci.submission.endswith("/submission.csv")


def test_autosubmission_names_its_reason(aci) -> None:
    assert aci.autosubmit("exit_cost") == "submission_not_found (exit_cost)"
    run(aci, "python baseline.py")
    assert aci.autosubmit("exit_cost") == "autosubmission (exit_cost)"


def test_a_command_over_the_short_timeout_is_killed_and_reported(make_aci) -> None:
    aci = make_aci(command_timeout_s=1.0)
    started = time.monotonic()
    out = run(aci, "echo started; sleep 20")
    assert time.monotonic() - started < 10
    assert out.startswith("started") and "EXECUTION TIMED OUT" in out and "1 seconds" in out
    assert run(aci, "echo alive") == "alive\n"


def test_python_commands_get_the_training_timeout(make_aci) -> None:
    aci = make_aci(command_timeout_s=1.0, training_timeout_s=8.0)
    assert "EXECUTION TIMED OUT" not in run(aci, 'python -c "import time; time.sleep(2); print(42)"')
    short = make_aci(command_timeout_s=10.0, training_timeout_s=1.0)
    out = run(short, 'python -c "import time; time.sleep(20)"')
    assert "EXECUTION TIMED OUT" in out and "1 seconds" in out


def test_long_output_is_clipped_in_the_middle(make_aci) -> None:
    aci = make_aci(observation_limit_chars=200)
    out = run(aci, "seq 1 5000")
    assert out.startswith("1\n2\n") and out.rstrip().endswith("5000")
    assert "characters of output omitted" in out and len(out) < 400
