"""Pieces every backend shares: the host folder behind a sandbox, the scrubbed environment, output
capping, the bash wrappers that run each command, and orphan detection.

Host layout of one sandbox (``<workdir>/stsc-sbx-XXXX/``, mode 0700)::

    owner.json      who started it (host, pid, process start time): orphan detection
    home/           the sandbox user's home, /home/agent inside isolated backends
    home/workspace  the task workspace (a copy of the task's workspace folder)
    tmp/            the sandbox's /tmp (per sandbox, never the host's)
    private/        staging for ``evaluate``: filled for one command, mounted only for it

Home and tmp are bind-mounted, so files under them are copied in and out on the host side; a path
that lies (or a symlink leads) anywhere else is copied by the sandbox user inside the sandbox.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import posixpath
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stsc.errors import SandboxError
from stsc.sandbox.base import TRUNCATION_MARKER

log = logging.getLogger(__name__)

ROOT_PREFIX = "stsc-sbx-"
OWNER_FILE = "owner.json"
INSIDE_HOME = "/home/agent"
INSIDE_TMP = "/tmp"
INSIDE_PRIVATE = "/run/stsc/private"
STATE_DIR = ".stsc"  # under the sandbox's /tmp: shell state and file transfers
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE", "AUTH")
SANDBOX_DEFINED = ("PATH", "HOME", "TMPDIR")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def parse_user(spec: str) -> tuple[int, int]:
    """``"uid:gid"`` (or ``"uid"``) -> numeric ids; raises ``SandboxError`` naming the key."""
    uid, _, gid = spec.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise SandboxError(f"sandbox.user={spec!r} must be numeric 'uid:gid', e.g. '1000:1000'") from None


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def scrub_env(host_env: dict[str, str], allowlist: list[str]) -> dict[str, str]:
    """Host variables matching ``allowlist`` (glob patterns), minus secret-looking names and minus the
    variables the sandbox defines itself (PATH, HOME, TMPDIR)."""
    kept: dict[str, str] = {}
    for name, value in host_env.items():
        if name in SANDBOX_DEFINED or looks_secret(name):
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in allowlist):
            kept[name] = value
    return kept


def base_env(allowlist: list[str], cpus: float, *, path: str, home: str, tmpdir: str) -> dict[str, str]:
    """The environment every command starts from: sandbox paths, a UTF-8 locale, BLAS/OpenMP
    threads matched to the CPU quota, then the allowlisted host variables."""
    threads = str(max(1, math.floor(cpus)))
    env = {"PATH": path, "HOME": home, "TMPDIR": tmpdir, "LANG": "C.UTF-8"}
    env.update(dict.fromkeys(THREAD_VARS, threads))
    env.update(scrub_env(dict(os.environ), allowlist))
    return env


class CappedBuffer:
    """Keeps the first ``limit`` bytes of a stream and counts (but drops) the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self._data = bytearray()
        self.seen = 0

    def feed(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        room = self.limit - len(self._data)
        if room > 0:
            self._data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.seen > self.limit

    def text(self) -> str:
        text = self._data.decode("utf-8", errors="replace")
        return text + TRUNCATION_MARKER if self.truncated else text


def exit_code_of(returncode: int) -> int:
    """Shell convention: a process killed by signal N exits with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# --------------------------------------------------------------------------------------------------
# Wrapper scripts. Every command runs under a small bash program that enters the working directory,
# applies the backend's prologue (rlimits) and, on exit, its epilogue (killing leftover background
# processes), so a command's processes never outlive it.

_RESTORE = r"""__stsc_state=$1; shift
shopt -s expand_aliases
if [ -f "$__stsc_state.env" ]; then
  unset -v __STSC_UNSET__ 2>/dev/null
  . "$__stsc_state.env"
fi
__stsc_dir=
[ -f "$__stsc_state.cwd" ] && IFS= read -r __stsc_dir < "$__stsc_state.cwd"
[ -n "$__stsc_dir" ] && { cd -- "$__stsc_dir" 2>/dev/null || cd -- "$__stsc_cwd"; }
unset __stsc_dir
__stsc_save() {
  unset -f trap
  { export -p; declare -f; alias -p; } > "$__stsc_state.env" 2>/dev/null
  __STSC_SHADOW__
  printf '%s' "$PWD" > "$__stsc_state.cwd" 2>/dev/null
}
"""
# Kills every process of session $1 except the calling shell, using builtins only (so it works when
# the process limit is exhausted): stop what it finds, kill it, repeat until nothing is left.
REAPER = r"""__stsc_reap() {
  local sid=$1 pass d s found
  for pass in 1 2 3 4 5 6 7 8 9 10; do
    found=
    for d in /proc/[0-9]*; do
      [ "${d#/proc/}" = "$$" ] && continue
      { read -r s < "$d/stat"; } 2>/dev/null || continue
      s=${s##*") "}; set -- $s
      [ "$4" = "$sid" ] || continue
      kill -STOP "${d#/proc/}" 2>/dev/null; found="$found ${d#/proc/}"
    done
    [ -z "$found" ] && return 0
    kill -9 $found 2>/dev/null
  done
}"""
# The command's own `trap ... EXIT` would replace the wrapper's trap (bash keeps one per signal),
# losing the state save and the epilogue. So `trap` is shadowed in the command's shell: an EXIT
# action is recorded and run by the wrapper's trap, after the save and before the epilogue, with
# the command's status in $?; its `exit N` or a `set -e` failure in it sets the status, as in bash.
# Other signals, options and subshells (which never run the wrapper's trap) go to the builtin.
_SHADOW = 'trap() { local -; set +x; __stsc_trap "$@"; }'
_TRAPS = r"""__stsc_exit_spec() { [[ ${1^^} == EXIT || $1 =~ ^0+$ ]]; }
__STSC_SHADOW__
__stsc_trap() {
  local -a __stsc_args=("$@") __stsc_other=()
  local __stsc_p= __stsc_a=- __stsc_s __stsc_x= __stsc_r=0
  while [[ ${1-} == -?* ]]; do
    case $1 in
      --) shift; break ;;
      -p) __stsc_p=1; shift ;;
      *) builtin trap "${__stsc_args[@]}"; return ;;
    esac
  done
  if (( $# == 0 )); then
    __stsc_trap -p EXIT; builtin trap -p {1..64} DEBUG ERR RETURN 2>/dev/null; return 0
  fi
  if [[ -n $__stsc_p ]]; then
    for __stsc_s; do
      if __stsc_exit_spec "$__stsc_s" && [[ ${__stsc_trap_sub-} != "$BASHPID" ]]; then
        [[ ! -v __stsc_trap_exit ]] || printf 'trap -- %s EXIT\n' "${__stsc_trap_exit@Q}"
      else builtin trap -p "$__stsc_s" || __stsc_r=1
      fi
    done
    return $__stsc_r
  fi
  [[ $1 =~ ^[0-9]+$ ]] || (( $# == 1 )) || { __stsc_a=$1; shift; }
  for __stsc_s; do
    if __stsc_exit_spec "$__stsc_s"; then __stsc_x=1; else __stsc_other+=("$__stsc_s"); fi
  done
  if [[ -z $__stsc_x || $BASHPID != "$$" ]]; then
    [[ -z $__stsc_x ]] || __stsc_trap_sub=$BASHPID
    builtin trap "${__stsc_args[@]}"; return
  fi
  if [[ $__stsc_a == - ]]; then unset -v __stsc_trap_exit; else __stsc_trap_exit=$__stsc_a; fi
  (( ${#__stsc_other[@]} == 0 )) || builtin trap -- "$__stsc_a" "${__stsc_other[@]}"
}
__stsc_status() { return "$__stsc_rc"; }
__stsc_on_exit() {
  [[ -v __stsc_trap_exit ]] || return 0
  declare -F exit >/dev/null || exit() {
    local __stsc_s=$?
    [[ $BASHPID != "$$" ]] || __stsc_finish "${1-$__stsc_rc}"
    builtin exit "${1-$__stsc_s}"
  }
  [[ $- != *e* ]] || { set -E; builtin trap '__stsc_finish $?' ERR; }
  if __stsc_status; then eval "$__stsc_trap_exit"; else eval "$__stsc_trap_exit"; fi
}
__stsc_finish() {
  [[ $BASHPID == "$$" ]] || builtin exit "$1"
  set +eEu; builtin trap - ERR; __stsc_end; builtin exit "$1"
}"""
_BODIES = {"argv": '"$@"', "eval": '__stsc_cmd=$1; set --; eval "$__stsc_cmd"'}


def wrapper_script(mode: str, prologue: str = "", epilogue: str = "", env_names: Iterable[str] = ()) -> str:
    """The bash program run for one command, called as ``bash -c SCRIPT NAME <cwd> ARGS...``.

    ``mode``: "argv" (run ARGS), "eval" (ARGS is one shell string) or "session" (ARGS is a state
    file prefix and a shell string: exported variables, functions, aliases and the directory left
    by the previous command replace the starting ones (``env_names``), the command runs in this
    shell, and they are saved again on exit, ``exit N`` included). In both shell modes an EXIT
    trap the command sets runs when the command ends, after the save and before the epilogue, and
    is not carried over; the name ``trap`` belongs to the wrapper (never saved as a function).
    """
    parts = ['__stsc_cwd=$1; shift; cd -- "$__stsc_cwd" || exit 1', prologue]
    if mode == "session":
        names = " ".join(n for n in env_names if n.isidentifier()) or "__stsc_none"
        parts.append(_RESTORE.replace("__STSC_UNSET__", names).replace("__STSC_SHADOW__", _SHADOW))
    # Defined after the restore so stale copies saved by `declare -f` are replaced.
    parts.append(f"__stsc_end() {{ :; {epilogue}\n}}")
    if mode == "argv":
        parts.append("trap '__stsc_rc=$?; __stsc_end; exit $__stsc_rc' EXIT")
    else:
        save = "__stsc_save || :; " if mode == "session" else ""
        parts.append(_TRAPS.replace("__STSC_SHADOW__", _SHADOW))
        parts.append(f"builtin trap '__stsc_rc=$?; {save}__stsc_on_exit; __stsc_finish \"$__stsc_rc\"' EXIT")
    parts.append(_BODIES["argv" if mode == "argv" else "eval"])
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------
# Host layout


@dataclass(frozen=True)
class Layout:
    """Host folders behind one sandbox and the paths commands see for them."""

    root: Path
    inside_home: str
    inside_tmp: str
    inside_private: str

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def workspace(self) -> Path:
        return self.home / "workspace"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def private(self) -> Path:
        return self.root / "private"

    @property
    def inside_workspace(self) -> str:
        return self.inside_home + "/workspace"

    def inside(self, path: str) -> str:
        """The absolute, normalised sandbox path of ``path`` (relative paths start at the workspace)."""
        return posixpath.normpath(posixpath.join(self.inside_workspace, path))

    def to_host(self, path: str) -> Path | None:
        """The host path of a sandbox path under the sandbox's home or /tmp, or None when it lies
        elsewhere or a symlink leads it out of them (then only the sandbox itself may resolve it)."""
        absolute = self.inside(path)
        for inside, host in ((self.inside_home, self.home), (self.inside_tmp, self.tmp)):
            if absolute == inside or absolute.startswith(inside.rstrip("/") + "/"):
                candidate = host / posixpath.relpath(absolute, inside)
                return candidate if candidate.resolve().is_relative_to(host.resolve()) else None
        return None


def read_small_file(path: Path, limit: int = 65536) -> str | None:
    """Text of a regular file in a sandbox folder, never following a symlink the sandbox planted
    nor waiting on a named pipe it put in the file's place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(limit).decode("utf-8", errors="replace")


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (None if no such process)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat_line.rsplit(")", 1)[1].split()[19])


def owner_record() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start_time(pid)}


def owner_alive(record: dict[str, object]) -> bool:
    """Whether the process that wrote ``record`` still runs. Records of other hosts count as alive
    (they cannot be checked from here)."""
    if record.get("host") != socket.gethostname():
        return True
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    return process_start_time(pid) == record.get("start")


def new_layout(workdir: str | None, isolated: bool) -> Layout:
    """Create an empty sandbox folder with its owner record. Isolated backends mount it at the
    fixed paths (/home/agent, /tmp, /run/stsc/private); otherwise commands see the host paths."""
    base = Path(workdir) if workdir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=base))
    (root / OWNER_FILE).write_text(json.dumps(owner_record()))
    if isolated:
        layout = Layout(root, INSIDE_HOME, INSIDE_TMP, INSIDE_PRIVATE)
    else:
        layout = Layout(root, str(root / "home"), str(root / "tmp"), str(root / "private"))
    for folder in (layout.home, layout.tmp, layout.tmp / STATE_DIR):
        folder.mkdir()
    return layout


def copy_workspace(src: Path, layout: Layout) -> None:
    if not src.is_dir():
        raise SandboxError(f"workspace {src} is not a folder")
    shutil.copytree(src, layout.workspace, symlinks=True)


def hand_over(paths: list[Path], uid: int, gid: int) -> None:
    """Give ``paths`` (recursively) to ``uid:gid`` when this process may (root); otherwise open them
    to every user so a sandbox user other than ours can write (the sandbox root stays 0700)."""
    is_root = os.geteuid() == 0
    if not is_root and uid == os.getuid():
        return
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
                if is_root:
                    os.lchown(name, uid, gid)
                elif not os.path.islink(name):
                    mode = os.lstat(name).st_mode
                    executable = stat.S_ISDIR(mode) or mode & stat.S_IXUSR
                    os.chmod(name, stat.S_IMODE(mode) | (0o777 if executable else 0o666))


def stage_private(private_dir: Path | None, layout: Layout) -> None:
    """Fill ``layout.private`` with a readable copy of ``private_dir`` (emptied first). Symbolic
    links are copied as links, never followed: the host must not read what a task's link points to."""
    shutil.rmtree(layout.private, ignore_errors=True)
    layout.private.mkdir()
    if private_dir is None:
        return
    if not private_dir.is_dir():
        raise SandboxError(f"private folder {private_dir} does not exist")
    shutil.copytree(private_dir, layout.private, symlinks=True, dirs_exist_ok=True)
    for dirpath, _dirnames, filenames in os.walk(layout.private):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)


def remove_tree(path: Path) -> None:
    """Remove a sandbox folder, making read-only leftovers writable first. Entries removed meanwhile
    (by another run's sweep) are no error."""

    def _retry(func, name, exc_info):  # type: ignore[no-untyped-def]
        try:
            if isinstance(exc_info[1], FileNotFoundError):
                return
            if func in (os.open, os.scandir, os.listdir):  # a folder it may not read: open it up
                os.chmod(name, stat.S_IMODE(os.lstat(name).st_mode) | 0o700)
                shutil.rmtree(name, onerror=_retry)
                return
            parent = os.path.dirname(name)
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
            func(name)
        except FileNotFoundError:
            pass

    try:
        shutil.rmtree(path, onerror=_retry)
    except FileNotFoundError:
        pass


def sweep_folders(workdir: str | None) -> int:
    """Remove sandbox folders whose owning process is gone; returns how many."""
    base = Path(workdir) if workdir else Path(tempfile.gettempdir())
    removed = 0
    for root in base.glob(ROOT_PREFIX + "*"):
        try:
            record = json.loads((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not owner_alive(record):
            remove_tree(root)
            removed += 1
    if removed:
        log.info("removed %d orphaned sandbox folder(s) under %s", removed, base)
    return removed
