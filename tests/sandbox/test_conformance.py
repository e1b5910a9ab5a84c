"""The sandbox contract (``stsc.sandbox.base``), run against every backend: commands and their
results, the persistent shell, files in and out, held-out files, and containment."""

from __future__ import annotations

import threading
import time
import tracemalloc
from importlib import metadata
from pathlib import Path

import pytest

from stsc.errors import SandboxError, SandboxPathError
from stsc.sandbox import TRUNCATION_MARKER, ExecResult
from tests.sandbox.conftest import SECRET_VALUE, host_ipv4_addresses


def _isolated(sandbox) -> bool:
    return getattr(getattr(sandbox, "plan", None), "bwrap", "docker") is not None


def require_isolation(sandbox) -> None:
    if not _isolated(sandbox):
        pytest.skip("the local backend runs unisolated here: bubblewrap (bwrap) is not installed")


def heartbeat_stops(sandbox, name: str = "beat") -> bool:
    """Whether the workspace file ``name`` (rewritten every 0.1 s by a sandbox loop) stopped changing."""
    host = sandbox.layout.to_host(name)
    first = host.read_text() if host.exists() else ""
    time.sleep(0.6)
    return (host.read_text() if host.exists() else "") == first


HEARTBEAT = "(i=0; while :; do i=$((i+1)); echo $i > beat; sleep 0.1; done)"


# -- commands -----------------------------------------------------------------------------------


def test_a_command_reports_exit_code_stdout_stderr_and_duration(sandbox):
    result = sandbox.exec("echo out; echo err >&2; exit 3", timeout=30)
    assert isinstance(result, ExecResult)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out and not result.truncated and not result.ok
    assert 0 < result.duration_s < 30


def test_a_missing_program_is_a_failed_result_not_an_exception(sandbox):
    result = sandbox.exec(["no-such-program-xyz"], timeout=30)
    assert result.exit_code == 127
    assert "no-such-program-xyz" in result.stderr


def test_argv_commands_are_not_interpreted_by_a_shell(sandbox):
    result = sandbox.exec(["echo", "$HOME; exit 9", "*"], timeout=30)
    assert result.ok
    assert result.stdout == "$HOME; exit 9 *\n"


def test_commands_start_in_the_workspace_or_the_given_directory_with_extra_env(sandbox):
    assert sandbox.exec("pwd", timeout=30).stdout.strip() == sandbox.workspace
    result = sandbox.exec('pwd; echo "$EXTRA"', timeout=30, cwd="data", env={"EXTRA": "a b"})
    assert result.stdout.splitlines() == [f"{sandbox.workspace}/data", "a b"]
    assert sandbox.exec('echo "[$EXTRA]"', timeout=30).stdout == "[]\n"


def test_the_workspace_is_a_copy_of_the_task_folder(sandbox, task_workspace):
    result = sandbox.exec("cat data/train.csv notes/deep/résumé.txt && rm baseline.py", timeout=30)
    assert result.ok, result.stderr
    assert result.stdout == "x,y\n1,0\n2,1\nünïcode\n"
    assert (task_workspace / "baseline.py").exists(), "the host's task folder must not change"


def test_python_is_the_task_runtime_with_the_versions_stsc_uses(sandbox):
    code = "import numpy, pandas, sklearn; print(numpy.__version__, pandas.__version__, sklearn.__version__)"
    result = sandbox.exec(["python", "-c", code], timeout=120)
    assert result.ok, result.stderr
    expected = " ".join(metadata.version(p) for p in ("numpy", "pandas", "scikit-learn"))
    assert result.stdout.strip() == expected
    assert sandbox.exec(["python", "baseline.py"], timeout=120).stdout == "2\n"
    assert sandbox.exec("flake8 --version", timeout=60).ok


def test_commands_run_as_a_non_root_user_without_capabilities(sandbox):
    require_isolation(sandbox)
    result = sandbox.exec("id -u; grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status", timeout=30)
    lines = result.stdout.split()
    assert lines[0] != "0"
    assert [v for k, v in zip(lines[1::2], lines[2::2], strict=True)] == ["0000000000000000"] * 3


# -- the persistent shell -----------------------------------------------------------------------


def test_the_shell_keeps_directory_exports_and_functions_across_commands(sandbox):
    shell = sandbox.shell()
    assert shell.cwd == sandbox.workspace
    assert shell.run(
        "cd data && export SPLIT=train && greet() { echo hi $1; }; alias hey='echo hey'", timeout=30
    ).ok
    assert shell.cwd == f"{sandbox.workspace}/data"
    result = shell.run('pwd; echo "$SPLIT"; greet you; hey there', timeout=30)
    assert result.stdout.splitlines() == [f"{sandbox.workspace}/data", "train", "hi you", "hey there"]
    assert shell.run("unset SPLIT; cd ..; exit 4", timeout=30).exit_code == 4
    assert shell.run('pwd; echo "[$SPLIT]"', timeout=30).stdout.splitlines() == [sandbox.workspace, "[]"]
    assert shell.run('mkdir -p "out " && cd "out "', timeout=30).ok  # a name ending in a space
    assert shell.run("pwd", timeout=30).stdout == f"{sandbox.workspace}/out \n" and shell.cwd.endswith(
        "/out "
    )


def test_the_shell_keeps_its_state_when_a_command_sets_its_own_exit_trap(sandbox):
    shell = sandbox.shell()
    first = shell.run("cd /tmp && export FOO=1 && trap 'echo bye' EXIT", timeout=30)
    assert (first.exit_code, first.stdout) == (0, "bye\n")
    after = shell.run('pwd; echo "$FOO"; trap -p EXIT', timeout=30)
    assert after.stdout.splitlines() == ["/tmp", "1"], "the trap lasts for its command only"
    assert shell.run("mkdir -p sub && cd sub; trap - EXIT; export BAR=2", timeout=30).ok
    assert shell.run('pwd; echo "$FOO$BAR"', timeout=30).stdout.splitlines() == ["/tmp/sub", "12"]


def test_a_commands_exit_trap_sees_its_status_and_may_change_it(sandbox):
    shell = sandbox.shell()
    kept = shell.run("trap 'echo \"status $?\"' EXIT INT; trap -p; exit 3", timeout=30)
    listing = "trap -- 'echo \"status $?\"' EXIT\ntrap -- 'echo \"status $?\"' SIGINT\n"
    assert (kept.exit_code, kept.stdout) == (3, listing + "status 3\n")
    changed = shell.run("cd /tmp; trap -- 'echo bye; exit 7' EXIT; false", timeout=30)
    assert (changed.exit_code, changed.stdout) == (7, "bye\n")
    failed = shell.run("set -e; cd ..; trap 'echo a; false; echo b' EXIT", timeout=30)
    assert (failed.exit_code, failed.stdout) == (1, "a\n"), "set -e applies inside the trap"
    assert shell.cwd == "/"
    assert sandbox.exec("trap 'echo $((1 + 1))' 0; exit 5", timeout=30).stdout == "2\n"


def test_two_shells_do_not_share_state(sandbox):
    one, two = sandbox.shell(), sandbox.shell()
    one.run("cd data; export WHO=one", timeout=30)
    assert two.run('pwd; echo "[$WHO]"', timeout=30).stdout.splitlines() == [sandbox.workspace, "[]"]


def test_the_shell_survives_a_timeout_with_its_state(sandbox):
    shell = sandbox.shell()
    shell.run("cd data; export KEEP=yes", timeout=30)
    result = shell.run(f"{HEARTBEAT.replace('beat', '../beat')} & sleep 60", timeout=1.5)
    assert result.timed_out and not result.ok
    assert heartbeat_stops(sandbox)
    after = shell.run('pwd; echo "$KEEP"', timeout=30)
    assert after.stdout.splitlines() == [f"{sandbox.workspace}/data", "yes"]


# -- timeouts and output ------------------------------------------------------------------------


def test_an_infinite_loop_is_stopped_at_its_timeout_with_its_children(sandbox):
    started = time.monotonic()
    result = sandbox.exec(f"{HEARTBEAT} & bash -c 'while :; do :; done'", timeout=2)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert 2 <= elapsed < 15
    assert heartbeat_stops(sandbox), "a child of the timed-out command is still running"
    assert sandbox.exec("echo still-usable", timeout=30).stdout == "still-usable\n"


def test_background_processes_do_not_outlive_their_command(sandbox):
    result = sandbox.exec(f"{HEARTBEAT} &", timeout=30)
    assert result.ok and result.duration_s < 10
    assert heartbeat_stops(sandbox)


def test_100_mb_of_output_is_truncated_without_exhausting_host_memory(sandbox, cfg):
    tracemalloc.start()
    try:
        result = sandbox.exec("head -c 100000000 /dev/zero | tr '\\0' x; echo done >&2", timeout=120)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ok and result.truncated
    assert result.stdout == "x" * cfg.output_limit_bytes + TRUNCATION_MARKER
    assert result.stderr == "done\n", "stderr is capped on its own"
    assert peak < 20 * cfg.output_limit_bytes + 10_000_000


# -- files --------------------------------------------------------------------------------------


def test_files_and_folders_round_trip_through_put_and_get(sandbox, tmp_path):
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "blob.bin").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "one.txt").write_text("one\n")
    sandbox.put(tmp_path / "one.txt", "new/dir/one.txt")
    sandbox.put(src, f"{sandbox.workspace}/copied")
    result = sandbox.exec(
        "echo two >> new/dir/one.txt && cat new/dir/one.txt && wc -c < copied/inner/blob.bin", timeout=30
    )
    assert result.stdout.split() == ["one", "two", "2560"], result.stderr
    sandbox.get("new/dir/one.txt", tmp_path / "back.txt")
    sandbox.get("copied", tmp_path / "back")
    assert (tmp_path / "back.txt").read_text() == "one\ntwo\n"
    assert (tmp_path / "back" / "inner" / "blob.bin").read_bytes() == bytes(range(256)) * 10


def test_get_and_put_see_exactly_what_the_sandbox_user_sees(sandbox, tmp_path):
    sandbox.get("/etc/os-release", tmp_path / "os-release")
    inside = sandbox.exec("cat /etc/os-release", timeout=30).stdout
    assert (tmp_path / "os-release").read_text() == inside
    host_only = tmp_path / "host-only"
    host_only.mkdir()
    host_only.chmod(0o777)
    (host_only / "secret.txt").write_text("host secret\n")
    sandbox.exec(f"ln -s {host_only}/secret.txt leak && ln -s {host_only} escape", timeout=30)
    if _isolated(sandbox):
        with pytest.raises(SandboxPathError, match="cannot read"):
            sandbox.get("leak", tmp_path / "x")
        assert not (tmp_path / "x").exists()
        with pytest.raises(SandboxPathError, match="cannot write"):
            sandbox.put(tmp_path / "os-release", "escape/planted")
        assert not (host_only / "planted").exists()
        with pytest.raises(SandboxPathError, match="cannot write"):
            sandbox.put(tmp_path / "os-release", "/etc/planted")
    with pytest.raises(SandboxPathError, match="does not exist"):
        sandbox.get("missing.txt", tmp_path / "x")


def test_a_file_the_sandbox_user_cannot_read_is_not_copied_out(sandbox, tmp_path):
    require_isolation(sandbox)
    with pytest.raises(SandboxPathError, match="cannot read"):
        sandbox.get("/etc/shadow", tmp_path / "shadow")
    assert not (tmp_path / "shadow").exists()


def test_the_shell_directory_is_never_read_through_a_planted_symlink(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    shell = sandbox.shell()
    shell.run("cd data", timeout=30)
    state = sandbox.layout.tmp / ".stsc" / "shell-1.cwd"
    state.unlink()
    state.symlink_to(secret)
    assert shell.cwd == sandbox.workspace


def test_close_removes_the_sandbox_and_is_idempotent(start, sandbox_workdir):
    sb = start()
    root = sb.layout.root
    assert root.is_dir()
    with sb:
        pass
    sb.close()
    assert not root.exists()
    with pytest.raises(SandboxError, match="closed"):
        sb.exec("true", timeout=5)


def test_closing_a_sandbox_stops_the_command_still_running_in_it(start):
    sb = start()
    shell = sb.shell()
    done = threading.Event()

    def run() -> None:
        try:
            shell.run("echo started > started; sleep 60", timeout=60)
        except SandboxError:
            pass  # a backend may report the command's end as the sandbox being gone
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not (sb.layout.workspace / "started").exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    sb.close()  # e.g. an episode cancelled while its command runs
    assert done.wait(15), "the command kept running after its sandbox was closed"


def test_errors_inside_a_with_block_still_close_the_sandbox(start):
    sb = start()
    with pytest.raises(RuntimeError), sb:
        raise RuntimeError("boom")
    assert not sb.layout.root.exists()


# -- held-out files ------------------------------------------------------------------------------


def test_the_private_folder_is_readable_by_the_evaluation_step_only(sandbox, private_dir):
    require_isolation(sandbox)
    peek = f'cat "{sandbox.private_path}/answers.csv"; cat "{private_dir}/answers.csv"; echo "[$STSC_PRIVATE_DIR]"'
    before = sandbox.exec(peek, timeout=30)
    assert "cat" not in before.stdout and "label" not in before.stdout and before.stdout.endswith("[]\n")
    result = sandbox.evaluate('cat "$STSC_PRIVATE_DIR/answers.csv"; touch written', private_dir, timeout=120)
    assert result.stdout == "id,label\n1,cat\n"
    assert "written" in result.stderr, "the evaluation step sees the workspace read-only"
    after = sandbox.exec(peek, timeout=30)
    assert "label" not in after.stdout and after.stdout.endswith("[]\n")
    assert sandbox.shell().run(f"cat {sandbox.private_path}/answers.csv", timeout=30).exit_code != 0


def test_a_link_in_the_private_folder_is_never_followed_on_the_host(sandbox, private_dir, tmp_path):
    secret = tmp_path / "host_only.txt"
    secret.write_text("HOST-ONLY-SECRET\n")
    (private_dir / "notes.txt").symlink_to(secret)  # what an untrusted prepare.py could leave
    result = sandbox.evaluate(
        'cat "$STSC_PRIVATE_DIR/notes.txt"; cat "$STSC_PRIVATE_DIR/answers.csv"', private_dir, 120
    )
    assert "HOST-ONLY-SECRET" not in result.stdout
    assert result.stdout == "id,label\n1,cat\n"  # the real labels still arrive


def test_the_evaluation_step_ignores_python_code_the_agent_left_in_its_home(sandbox, private_dir):
    plant = (
        'd=$(python -c "import site; print(site.getusersitepackages())") && mkdir -p "$d" && '
        'echo "print(\'HIJACKED\')" > "$d/usercustomize.py"'
    )
    assert sandbox.exec(plant, timeout=30).ok
    probe = "import os, site; print(os.environ.get('PYTHONNOUSERSITE'), site.ENABLE_USER_SITE)"
    result = sandbox.evaluate(["python", "-c", probe], private_dir, 120)
    assert result.stdout == "1 False\n"


def test_a_pipe_in_place_of_the_shell_state_does_not_hang_the_host(sandbox):
    shell = sandbox.shell()
    state = shell._state_inside + ".cwd"
    shell.run(f"rm -f {state}; mkfifo {state}", timeout=3)  # its own exit then blocks on the pipe
    reader = threading.Thread(target=lambda: shell.cwd, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading the shell's directory blocked on the pipe"
    assert shell.cwd == sandbox.workspace


def test_evaluate_runs_in_the_workspace_and_reports_failures_as_results(sandbox, private_dir):
    result = sandbox.evaluate(
        ["python", "-c", "import os; print(os.getcwd()); raise SystemExit(2)"], private_dir, 120
    )
    assert result.exit_code == 2 and result.stdout.strip() == sandbox.workspace
    without = sandbox.evaluate('echo "[$STSC_PRIVATE_DIR]"', None, 60)
    assert (without.exit_code, without.stdout) == (0, "[]\n"), "no private folder, no variable"


# -- containment ---------------------------------------------------------------------------------


def test_network_egress_to_a_listener_on_the_host_fails(sandbox, listener):
    require_isolation(sandbox)
    addresses = host_ipv4_addresses()
    code = (
        "import socket, sys\n"
        "ok = []\n"
        f"for host in {addresses!r}:\n"
        "    try:\n"
        f"        socket.create_connection((host, {listener.port}), timeout=3).close(); ok.append(host)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(ok)\n"
    )
    result = sandbox.exec(["python", "-c", code], timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert listener.accepted == 0
    socket_ok = __import__("socket").create_connection(("127.0.0.1", listener.port), timeout=3)
    socket_ok.close()
    time.sleep(0.2)
    assert listener.accepted == 1, "the listener itself works: the sandbox was what blocked"


def test_writing_outside_the_workspace_fails(sandbox, tmp_path):
    require_isolation(sandbox)
    outside = tmp_path / "host-folder"
    outside.mkdir()
    outside.chmod(0o777)
    targets = ["/etc/stsc-probe", "/usr/stsc-probe", "/stsc-probe", str(outside / "probe")]
    for target in targets:
        result = sandbox.exec(["sh", "-c", 'echo x > "$1"', "sh", target], timeout=30)
        assert result.exit_code != 0, f"{target} was writable"
    assert not (outside / "probe").exists()
    assert not Path("/etc/stsc-probe").exists() and not Path("/usr/stsc-probe").exists()
    assert sandbox.exec(
        "echo ok > inside.txt && echo ok > $HOME/.cache-probe && echo ok > /tmp/t", timeout=30
    ).ok


def test_a_secret_in_the_host_environment_is_absent_inside(sandbox):
    result = sandbox.exec("env", timeout=30)
    assert SECRET_VALUE not in result.stdout
    assert "STSC_TEST_VISIBLE=visible-value" in result.stdout, "allowlisted variables pass"
    assert "STSC_UNLISTED" not in result.stdout, "variables outside the allowlist do not"
    shell_env = sandbox.shell().run("env", timeout=30).stdout
    assert SECRET_VALUE not in shell_env


def test_a_fork_bomb_is_contained(sandbox):
    require_isolation(sandbox)
    started = time.monotonic()
    result = sandbox.exec(":(){ :|:& };:", timeout=3)
    assert time.monotonic() - started < 30
    assert result.exit_code == 0 or result.timed_out
    started = time.monotonic()
    sandbox.exec(":(){ :|:; };:", timeout=3)
    assert time.monotonic() - started < 30, "a foreground bomb must end with its timeout"
    check = sandbox.exec("echo alive; ps -e --no-headers | wc -l", timeout=30)
    assert check.stdout.split()[0] == "alive", check.stderr
    assert int(check.stdout.split()[1]) < 16, "bomb processes survived:\n" + check.stdout


def test_allocating_beyond_the_memory_limit_kills_only_the_command(sandbox, cfg):
    require_isolation(sandbox)
    big = ["python", "-c", f"x = b'x' * ({cfg.memory_mb * 2} * 1024 * 1024); print('allocated')"]
    result = sandbox.exec(big, timeout=120)
    assert result.exit_code != 0 and not result.timed_out
    assert "allocated" not in result.stdout
    ok = sandbox.exec(["python", "-c", "x = b'x' * (64 * 1024 * 1024); print(len(x))"], timeout=120)
    assert ok.stdout.strip() == str(64 * 1024 * 1024), ok.stderr


def test_each_command_gets_the_open_files_limit(sandbox, cfg):
    assert sandbox.exec("ulimit -n", timeout=30).stdout.strip() == str(cfg.nofile)


def test_no_command_writes_a_file_beyond_the_size_limit(sandbox, cfg):
    assert sandbox.exec("ulimit -f", timeout=30).stdout.strip() == str(cfg.max_file_mb * 1024)
    limit = cfg.max_file_mb * 1024 * 1024
    big = sandbox.exec(f"head -c {2 * limit} /dev/zero > big.bin; echo $?; stat -c %s big.bin", timeout=60)
    status, size = big.stdout.split()
    assert status != "0" and int(size) == limit  # cut at the limit (SIGXFSZ), not the whole disk
    ok = sandbox.exec(f"head -c {limit // 2} /dev/zero > half.bin && stat -c %s half.bin", timeout=60)
    assert ok.stdout.strip() == str(limit // 2), ok.stderr
