"""The file commands of the interface: a windowed viewer, search, and line edits with a lint gate.

Files live in the sandbox; the editor reads and writes them with ``get``/``put`` and runs ``grep``,
``find`` and ``flake8`` there with ``exec``, so the same code works for every backend. Every handler
takes the argument string and the body (for ``edit``/``insert``) and returns the observation text;
a misuse is an observation saying how to call the command, never an exception. Only
infrastructure failure raises (``SandboxError``).
"""

from __future__ import annotations

import posixpath
import shlex
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from stsc.errors import SandboxError, SandboxPathError
from stsc.sandbox.base import ExecResult, Sandbox

LINT_CODES = "F821,F822,F831,E111,E112,E113,E999,E902"
MAX_LISTED = 100


class UsageError(Exception):
    """A command was called wrongly; the message is shown to the agent."""


class FileEditor:
    """State of the editor (open file, current line) plus the file command handlers."""

    def __init__(self, sandbox: Sandbox, cwd: Callable[[], str], window: int, timeout: float):
        self.sandbox = sandbox
        self._cwd = cwd
        self.window = max(1, window)
        self.timeout = timeout
        self.open_file: str | None = None
        self.current_line = 1

    # -- sandbox file access -----------------------------------------------------------------------

    def path(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(self._cwd(), name))

    def _exec(self, argv: list[str]) -> ExecResult:
        return self.sandbox.exec(argv, timeout=self.timeout, cwd=self._cwd())

    def is_file(self, path: str) -> bool:
        return self._exec(["test", "-f", path]).ok

    def read(self, path: str) -> list[str]:
        """Lines of a sandbox file (without line ends); the file must exist."""
        with tempfile.TemporaryDirectory(prefix="stsc-edit-") as tmp:
            local = Path(tmp) / "file"
            try:
                self.sandbox.get(path, local)
            except SandboxPathError as e:
                raise UsageError(f"Cannot read {path}: {e}") from e
            text = local.read_bytes().decode("utf-8", errors="replace")
        return text.splitlines()

    def write(self, path: str, lines: list[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="stsc-edit-") as tmp:
            local = Path(tmp) / "file"
            local.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            try:
                self.sandbox.put(local, path)
            except SandboxPathError as e:
                raise UsageError(f"Cannot write {path}: {e}") from e

    # -- viewing -----------------------------------------------------------------------------------

    def bounds(self, total: int, line: int) -> tuple[int, int]:
        """First and last line of the window centred on ``line``, kept inside the file."""
        start = max(1, min(line - (self.window - 1) // 2, total - self.window + 1))
        return start, min(total, start + self.window - 1)

    def render(self, path: str, lines: list[str], line: int) -> str:
        """The window of ``lines`` around ``line`` with line numbers and what lies outside it."""
        total = len(lines)
        start, end = self.bounds(total, line)
        out = [f"[File: {path} ({total} lines total)]"]
        if start > 1:
            out.append(f"({start - 1} more lines above)")
        out.extend(f"{i}:{lines[i - 1]}" for i in range(start, end + 1))
        if end < total:
            out.append(f"({total - end} more lines below)")
        return "\n".join(out)

    def _show(self) -> str:
        assert self.open_file is not None
        if not self.is_file(self.open_file):
            path, self.open_file = self.open_file, None
            raise UsageError(f"The open file {path} no longer exists.")
        lines = self.read(self.open_file)
        text = self.render(self.open_file, lines, self.current_line)
        # Scrolling moves from the centre of what is shown, so consecutive windows tile the file.
        start, end = self.bounds(len(lines), self.current_line)
        self.current_line = max(start, min(end, start + (self.window - 1) // 2))
        return text

    def _require_open(self) -> str:
        if self.open_file is None:
            raise UsageError('No file is open. Open one first with: open "<path>"')
        return self.open_file

    @staticmethod
    def _line_number(text: str, usage: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"{text!r} is not a line number. Usage: {usage}") from None

    def open(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise UsageError('Usage: open "<path>" [<line_number>]')
        path = self.path(args[0])
        if not self.is_file(path):
            raise UsageError(f"File {args[0]} not found (looked for {path}).")
        line = self._line_number(args[1], 'open "<path>" [<line_number>]') if len(args) == 2 else 1
        self.open_file, self.current_line = path, line
        return self._show()

    def goto(self, args: list[str]) -> str:
        self._require_open()
        if len(args) != 1:
            raise UsageError("Usage: goto <line_number>")
        self.current_line = self._line_number(args[0], "goto <line_number>")
        return self._show()

    def scroll(self, direction: int) -> str:
        self._require_open()
        self.current_line += direction * self.window
        return self._show()

    def create(self, args: list[str]) -> str:
        if len(args) != 1:
            raise UsageError("Usage: create <filename>")
        path = self.path(args[0])
        if self._exec(["test", "-e", path]).ok:
            raise UsageError(f"File {args[0]} already exists; use open to view it.")
        made = self._exec(["mkdir", "-p", posixpath.dirname(path)])
        if not made.ok:
            raise UsageError(f"Cannot create {path}: {made.output.strip()}")
        self.write(path, [""])
        self.open_file, self.current_line = path, 1
        return self._show()

    # -- searching ---------------------------------------------------------------------------------

    def search_dir(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise UsageError("Usage: search_dir <search_term> [<dir>]")
        term, where = args[0], self.path(args[1] if len(args) == 2 else ".")
        result = self._exec(["grep", "-rIc", "-F", "--", term, where])
        if result.exit_code > 1:
            raise UsageError(f"Cannot search {where}: {result.output.strip()}")
        counts = []
        for row in result.stdout.splitlines():
            name, _, count = row.rpartition(":")
            if count.strip().isdigit() and int(count) > 0:
                counts.append((name, int(count)))
        if not counts:
            return f'No matches found for "{term}" in {where}'
        if len(counts) > MAX_LISTED:
            return f'More than {MAX_LISTED} files matched "{term}" in {where}. Please narrow your search.'
        listing = "\n".join(f"{name} ({n} matches)" for name, n in counts)
        total = sum(n for _, n in counts)
        return f'Found {total} matches for "{term}" in {where}:\n{listing}\nEnd of matches for "{term}" in {where}'

    def search_file(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise UsageError("Usage: search_file <search_term> [<file>]")
        term = args[0]
        path = self.path(args[1]) if len(args) == 2 else self._require_open()
        if not self.is_file(path):
            raise UsageError(f"File {path} not found.")
        hits = [(i, line) for i, line in enumerate(self.read(path), start=1) if term in line]
        if not hits:
            return f'No matches found for "{term}" in {path}'
        if len(hits) > MAX_LISTED:
            return f'More than {MAX_LISTED} lines matched "{term}" in {path}. Please narrow your search.'
        listing = "\n".join(f"Line {i}:{line}" for i, line in hits)
        return f'Found {len(hits)} matches for "{term}" in {path}:\n{listing}\nEnd of matches for "{term}" in {path}'

    def find_file(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise UsageError("Usage: find_file <file_name> [<dir>]")
        name, where = args[0], self.path(args[1] if len(args) == 2 else ".")
        result = self._exec(["find", where, "-type", "f", "-name", name])
        if not result.ok and not result.stdout.strip():
            raise UsageError(f"Cannot search {where}: {result.output.strip()}")
        found = sorted(result.stdout.split("\n"))
        found = [f for f in found if f]
        if not found:
            return f'No matches found for "{name}" in {where}'
        if len(found) > MAX_LISTED:
            return f'More than {MAX_LISTED} files named "{name}" in {where}. Please narrow your search.'
        return f'Found {len(found)} matches for "{name}" in {where}:\n' + "\n".join(found)

    # -- editing -----------------------------------------------------------------------------------

    def edit(self, args: list[str], body: list[str]) -> str:
        path = self._require_open()
        usage = "edit <start_line>:<end_line> followed by the new lines and end_of_edit"
        if len(args) != 1 or ":" not in args[0]:
            raise UsageError(f"Usage: {usage}")
        first, _, last = args[0].partition(":")
        start, end = self._line_number(first, usage), self._line_number(last, usage)
        old = self.read(path)
        if start < 1 or end < start - 1 or end > max(len(old), 1):
            raise UsageError(
                f"Invalid range {start}:{end}: the file has {len(old)} lines; use 1 <= start <= end + 1 "
                f"and end <= {max(len(old), 1)}."
            )
        return self._apply(path, old, old[: start - 1] + body + old[end:], start)

    def insert(self, args: list[str], body: list[str]) -> str:
        path = self._require_open()
        usage = "insert <line_number> followed by the new lines and end_of_insert"
        if len(args) != 1:
            raise UsageError(f"Usage: {usage}")
        after = self._line_number(args[0], usage)
        old = self.read(path)
        if not 0 <= after <= len(old):
            raise UsageError(f"Invalid line {after}: the file has {len(old)} lines; use 0..{len(old)}.")
        return self._apply(path, old, old[:after] + body + old[after:], after + 1)

    def _apply(self, path: str, old: list[str], new: list[str], line: int) -> str:
        """Write ``new``; for Python files revert it when it adds lint errors, showing both views."""
        lint = path.endswith(".py")
        before = self._lint(path) if lint else []
        self.write(path, new)
        added = _added_errors(before, self._lint(path)) if lint else []
        self.open_file, self.current_line = path, line
        if not added:
            return (
                self.render(path, new, line) + "\nFile updated. Review the changes above and make sure they "
                "are correct (indentation, no duplicated or missing lines). Edit the file again if needed."
            )
        self.write(path, old)
        errors = "\n".join(f"- {e}" for e in added)
        return (
            f"Your edit was NOT applied: it introduces new errors:\n{errors}\n\n"
            f"This is how the file would look with your edit:\n-------------------------------------------------\n"
            f"{self.render(path, new, line)}\n-------------------------------------------------\n"
            f"This is the file as it is now (unchanged):\n-------------------------------------------------\n"
            f"{self.render(path, old, line)}\n-------------------------------------------------\n"
            "Fix your edit command (line range, indentation, names) and try again."
        )

    def _lint(self, path: str) -> list[str]:
        """flake8 findings of the gated classes as 'CODE message (line N)' strings."""
        result = self._exec(["python", "-m", "flake8", "--isolated", f"--select={LINT_CODES}", path])
        if "No module named flake8" in result.output:
            raise SandboxError("the sandbox's python has no flake8; install it in the sandbox image")
        findings = []
        for row in result.stdout.splitlines():
            parts = row.split(":", 3)
            if len(parts) == 4 and parts[1].strip().isdigit():
                findings.append(f"{parts[3].strip()} (line {parts[1].strip()})")
        return findings


def _added_errors(before: list[str], after: list[str]) -> list[str]:
    """Findings of ``after`` beyond those of ``before``, compared without line numbers."""

    def key(finding: str) -> str:
        return finding.rsplit(" (line ", 1)[0]

    remaining = Counter(key(f) for f in before)
    added = []
    for finding in after:
        if remaining[key(finding)] > 0:
            remaining[key(finding)] -= 1
        else:
            added.append(finding)
    return added


def split_args(text: str) -> list[str]:
    """Arguments of a command line, shell-quoted; raises ``UsageError`` on unbalanced quotes."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"Cannot parse the arguments {text!r}: {e}") from None
