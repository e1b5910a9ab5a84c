"""The block list for interactive programs and the choice of timeout."""

from __future__ import annotations

import re

import pytest

from stsc.agent import guards
from stsc.agent.guards import is_training_command, refusal
from stsc.config import AgentConfig

BLOCKED = AgentConfig().blocked_commands


@pytest.mark.parametrize(
    "action",
    [
        "vim train.py",
        "nano baseline.py",
        "cd src && vi model.py",
        "python",
        "python3",
        "/usr/bin/python3.11 -q",
        "python -i train.py",
        "ipython",
        "bash",
        "tail -f log.txt",
        "tail -n 50 -f train.log",
        "/usr/bin/vim train.py",
        "git log | /usr/bin/less",
        "ls\ntop",
        "nohup python train.py &",
        "FOO=1 python3",
        "time env DEBUG=1 python",
    ],
)
def test_interactive_programs_are_refused_with_a_clear_message(action: str) -> None:
    message = refusal(action, BLOCKED)
    assert message is not None
    assert "not supported" in message and "python train.py" in message


@pytest.mark.parametrize(
    "action",
    [
        "python train.py --epochs 3",
        'python -c "import sklearn; print(sklearn.__version__)"',
        "python -m pip list",
        "echo 'print(1)' | python",
        "python < script.py",
        "python - <<'EOF'\nprint('vim')\nEOF",
        "cat > notes.txt <<EOF\nvim\nnano\npython\nEOF",
        "grep -n vim README.md",
        "tail -n 20 log.txt",
        "bash run.sh",
        "ls -la; head data/train.csv",
        "evim_is_not_vim.sh",
    ],
)
def test_ordinary_commands_are_allowed(action: str) -> None:
    assert refusal(action, BLOCKED) is None


def test_the_block_list_comes_from_the_config() -> None:
    assert refusal("htop", BLOCKED) is not None
    assert refusal("htop", []) is None


@pytest.mark.parametrize(
    "action,training",
    [
        ("python train.py", True),
        ("cd src && python3 -u fit.py", True),
        ("torchrun --nproc_per_node=2 train.py", True),
        ("accelerate launch train.py", True),
        ("deepspeed train.py", True),
        ("/usr/bin/python3 train.py", True),
        (".venv/bin/python train.py", True),
        ("cd src && ./env/bin/python3.11 -u fit.py", True),
        ("~/.local/bin/accelerate launch train.py", True),
        ("ls -la", False),
        ("cat my_python_notes.txt", False),
        ("sleep 5", False),
    ],
)
def test_training_commands_get_the_training_timeout(action: str, training: bool) -> None:
    assert is_training_command(action) is training


_TRICKY = [
    "'vim' a.py",
    'v"i"m a.py',
    "v\\im a.py",
    "echo step 3",
    "ls -la sh",
    "./vim",
    "cat vim.txt",
    "  top  ",
]


@pytest.mark.parametrize("action", _TRICKY)
def test_the_quick_check_agrees_with_the_tokenizer(action: str, monkeypatch) -> None:
    """Commands naming no refusable program skip the tokenizer; forcing it gives the same answer."""
    quick = refusal(action, BLOCKED)
    monkeypatch.setattr(guards, "_triggers", lambda blocked: re.compile(""))  # matches everywhere
    assert refusal(action, BLOCKED) == quick
