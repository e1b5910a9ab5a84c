"""The bash wrapper every backend runs a command under (``common.wrapper_script``), run directly
with bash and an epilogue that marks its run: the command's own EXIT traps must not cost the
saved shell state or the backend's epilogue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stsc.sandbox.common import wrapper_script

EPILOGUE = "echo epilogue"


def run(command: str, state: Path | None = None) -> tuple[int, str]:
    """(exit code, stdout) of ``command`` in a session wrapper with state prefix ``state``, or in
    the plain shell-string wrapper when ``state`` is None."""
    mode, args = ("eval", [command]) if state is None else ("session", [str(state), command])
    script = wrapper_script(mode, epilogue=EPILOGUE, env_names=["PATH"])
    done = subprocess.run(
        ["bash", "-c", script, "stsc", "/", *args], capture_output=True, text=True, timeout=30
    )
    return done.returncode, done.stdout


@pytest.mark.parametrize("mode", ["eval", "session"])
@pytest.mark.parametrize(
    ("command", "code", "stdout"),
    [
        ("trap 'echo bye' EXIT", 0, "bye\n"),
        ("trap -- 'echo \"bye $?\"' EXIT; exit 3", 3, "bye 3\n"),
        ("trap 'echo bye; exit 7' EXIT INT; false", 7, "bye\n"),
        ("trap 'echo bye; exit' EXIT; (exit 4)", 4, "bye\n"),
        ("set -e; trap 'echo a; false; echo b' EXIT; exit 2", 1, "a\n"),
        ("set -e; f() { echo a; false; echo b; }; trap f EXIT", 1, "a\n"),
        ("trap 'echo bye' EXIT; trap EXIT", 0, ""),
        ("trap 'echo bye' exit; trap - 0", 0, ""),
        ("trap 'echo bye' EXIT; trap '' EXIT", 0, ""),
        ("trap 'echo a' EXIT; trap 'echo b' EXIT", 0, "b\n"),
        ("trap '(exit 9); echo \"sub $?\"' EXIT", 0, "sub 9\n"),
        ("(trap 'echo sub' EXIT; true); echo main", 0, "sub\nmain\n"),
    ],
)
def test_a_commands_exit_trap_runs_once_before_the_epilogue(tmp_path, mode, command, code, stdout):
    state = tmp_path / "shell" if mode == "session" else None
    assert run(command, state) == (code, stdout + "epilogue\n")


def test_the_state_is_saved_whatever_the_exit_trap_does(tmp_path):
    state = tmp_path / "shell"
    assert run("cd /tmp; export FOO=1; greet() { echo hi; }; trap 'cd /; export FOO=2' EXIT", state)[0] == 0
    restored = ["bash", "-c", '. "$0"; type -t trap', str(tmp_path / "shell.env")]
    assert subprocess.run(restored, capture_output=True, text=True).stdout == "builtin\n"
    assert run('pwd; echo "$FOO"; greet', state) == (0, "/tmp\n1\nhi\nepilogue\n")
    assert run("cd /usr; trap 'exit 5' EXIT", state)[0] == 5
    assert run("cd /; set -u; trap 'echo $unset_variable' EXIT", state)[0] == 0
    assert run("pwd", state) == (0, "/\nepilogue\n")


def test_trap_lists_the_commands_own_exit_trap_only(tmp_path):
    listing = "trap -- 'echo \"it'\\''s\"' EXIT\ntrap -- 'echo \"it'\\''s\"' SIGHUP\n"
    assert run("trap -p; trap 'echo \"it'\\''s\"' EXIT HUP; trap; trap -p EXIT 1", tmp_path / "s") == (
        0,
        listing + listing + "it's\nepilogue\n",
    )
    saved = "trap 'echo a' EXIT; old=$(trap -p EXIT); trap - EXIT; echo ${old:+kept}; eval \"$old\""
    assert run(saved) == (0, "kept\na\nepilogue\n")
    assert run("(trap 'echo sub' EXIT; trap -p EXIT; trap - EXIT; trap -p EXIT)") == (
        0,
        "trap -- 'echo sub' EXIT\nepilogue\n",
    )
    assert run("trap -p EXIT BOGUS; echo $?; trap 'echo x' BOGUS; echo $?; trap -x; echo $?") == (
        0,
        "1\n1\n2\nepilogue\n",
    )
