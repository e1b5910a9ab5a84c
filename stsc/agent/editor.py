"""The file commands of the interface: a windowed viewer, search, and line edits with a lint gate.

Files live in the sandbox; the editor reads and writes them with ``get``/``put`` and runs ``grep``,
``find`` and ``flake8`` there with ``exec``, so the same code works for every backend. Every handler
takes the argument string and the body (for ``edit``/``insert``) and returns the observation text;
a misuse, or a path that is not a readable regular file (a folder, a named pipe, gone) or is larger
than ``MAX_FILE_BYTES`` (the host reads a file whole), is an observation saying so, never an
exception. Only infrastructure failure raises (``SandboxError``).

Edits change only the lines they name: lines are split on ``\\n`` alone, each keeps its own line end
(``\\n`` or ``\\r\\n``; new lines take the file's usual one), bytes that are not UTF-8 pass through
unchanged, the file mode is kept, and so is whether the file ends with a line end. A Python edit
that adds lint errors is undone by writing back the exact bytes read before it.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stsc.errors import SandboxError, SandboxPathError
from stsc.sandbox.base import ExecResult, Sandbox

LINT_CODES = "F821,F822,F831,E111,E112,E113,E999,E902"
MAX_LISTED = 100
MAX_FILE_BYTES = 16 * 2**20  # larger files (data) are refused: view them with head, sed or grep
_MISSING = "does not exist"
_SPECIAL = "is not a regular file (a folder, a named pipe or a device)"
_GONE = {_MISSING: "no longer exists", _SPECIAL: "is no longer a regular file"}


class UsageError(Exception):
    """A command was called wrongly; the message is shown to the agent."""


@dataclass(frozen=True)
class Document:
    """A text file as the editor sees it. ``lines`` are split on ``\\n`` only and hold the text
    without its line end, with undecodable bytes kept as surrogate escapes; ``ends`` holds each
    line's end (``\\n``, ``\\r\\n``, or ``""`` for a last line without one); ``raw`` and ``mode``
    are the bytes and permission bits the file had when read."""

    raw: bytes
    mode: int
    lines: list[str]
    ends: list[str]

    @classmethod
    def parse(cls, raw: bytes, mode: int) -> Document:
        chunks = raw.decode("utf-8", errors="surrogateescape").split("\n")
        last = chunks.pop()
        lines, ends = [], []
        for chunk in chunks:
            crlf = chunk.endswith("\r")
            lines.append(chunk[:-1] if crlf else chunk)
            ends.append("\r\n" if crlf else "\n")
        if last:
            lines.append(last)
            ends.append("")
        return cls(raw, mode, lines, ends)

    @property
    def shown(self) -> list[str]:
        """The lines as the agent sees them (undecodable bytes as U+FFFD)."""
        return [line.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for line in self.lines]

    def replaced(self, start: int, stop: int, body: list[str]) -> Document:
        """This file with ``lines[start:stop]`` replaced by ``body``. New lines end with the file's
        usual line end; if the file had no final line end, the new last line has none either."""
        newline = "\r\n" if self.ends.count("\r\n") > self.ends.count("\n") else "\n"
        body = [line.encode("utf-8", "replace").decode("utf-8") for line in body]
        lines = self.lines[:start] + body + self.lines[stop:]
        ends = [end or newline for end in self.ends[:start] + [newline] * len(body) + self.ends[stop:]]
        if ends and self.ends[-1:] == [""]:
            ends[-1] = ""
        text = "".join(line + end for line, end in zip(lines, ends, strict=True))
        return Document.parse(text.encode("utf-8", "surrogateescape"), self.mode)


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

    def _not_a_file(self, path: str) -> str | None:
        """Why ``path`` cannot be edited (missing; a folder, pipe or device; too large), or None for
        a regular file. Checked inside the sandbox, so a named pipe is never opened."""
        result = self._exec(["stat", "-L", "-c", "%F:%s", "--", path])
        if not result.ok:
            return _MISSING
        kind, _, size = result.stdout.strip().rpartition(":")
        if kind not in ("regular file", "regular empty file"):
            return _SPECIAL
        if int(size) > MAX_FILE_BYTES:
            return (
                f"is too large for the editor ({int(size) / 2**20:.1f} MB; the limit is "
                f"{MAX_FILE_BYTES // 2**20} MB). View parts of it with head, tail, grep -n or "
                "sed -n 'START,ENDp'"
            )
        return None

    def read(self, path: str) -> Document:
        """The sandbox file ``path``; raises ``UsageError`` unless it is a readable regular file."""
        problem = self._not_a_file(path)
        if problem:
            raise UsageError(f"{path} {problem}.")
        return self._fetch(path)

    def _fetch(self, path: str) -> Document:
        """The sandbox file ``path``, already checked to be a regular file."""
        with tempfile.TemporaryDirectory(prefix="stsc-edit-") as tmp:
            local = Path(tmp) / "file"
            try:
                self.sandbox.get(path, local)
                return _read_regular(local)
            except (SandboxPathError, OSError) as e:
                raise UsageError(f"Cannot read {path}: {e}") from e

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Replace the content of ``path`` with ``data``, leaving it with permission bits ``mode``."""
        with tempfile.TemporaryDirectory(prefix="stsc-edit-") as tmp:
            local = Path(tmp) / "file"
            local.write_bytes(data)
            local.chmod(mode)  # put copies the mode along with the bytes
            try:
                self.sandbox.put(local, path)
            except (SandboxPathError, OSError) as e:
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
        path, doc = self._read_open()
        text = self.render(path, doc.shown, self.current_line)
        # Scrolling moves from the centre of what is shown, so consecutive windows tile the file.
        start, end = self.bounds(len(doc.lines), self.current_line)
        self.current_line = max(start, min(end, start + (self.window - 1) // 2))
        return text

    def _require_open(self) -> str:
        if self.open_file is None:
            raise UsageError('No file is open. Open one first with: open "<path>"')
        return self.open_file

    def _read_open(self) -> tuple[str, Document]:
        """The open file and its content; closes it when it is no longer a regular file."""
        path = self._require_open()
        problem = self._not_a_file(path)
        if problem:
            self.open_file = None
            gone = _GONE.get(problem, problem)
            raise UsageError(f"The open file {path} {gone}; open a file again.")
        return path, self._fetch(path)

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
        problem = self._not_a_file(path)
        if problem == _MISSING:
            raise UsageError(f"File {args[0]} not found (looked for {path}).")
        if problem == _SPECIAL:
            raise UsageError(f"{args[0]} {problem}; only regular files can be opened.")
        if problem:
            raise UsageError(f"{args[0]} {problem}.")
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
        self.write(path, b"\n")
        self.open_file, self.current_line = path, 1
        return self._show()

    # -- searching ---------------------------------------------------------------------------------

    def search_dir(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise UsageError("Usage: search_dir <search_term> [<dir>]")
        term, where = args[0], self.path(args[1] if len(args) == 2 else ".")
        result = self._exec(["grep", "-rIcH", "-D", "skip", "-F", "--", term, where])
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
        if len(args) == 2:
            path = self.path(args[1])
            if self._not_a_file(path) == _MISSING:
                raise UsageError(f"File {path} not found.")
            doc = self.read(path)
        else:
            path, doc = self._read_open()
        hits = [(i, line) for i, line in enumerate(doc.shown, start=1) if term in line]
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
        self._require_open()
        usage = "edit <start_line>:<end_line> followed by the new lines and end_of_edit"
        if len(args) != 1 or ":" not in args[0]:
            raise UsageError(f"Usage: {usage}")
        first, _, last = args[0].partition(":")
        start, end = self._line_number(first, usage), self._line_number(last, usage)
        path, old = self._read_open()
        total = len(old.lines)
        if start < 1 or end < start - 1 or end > max(total, 1):
            raise UsageError(
                f"Invalid range {start}:{end}: the file has {total} lines; use 1 <= start <= end + 1 "
                f"and end <= {max(total, 1)}."
            )
        return self._apply(path, old, old.replaced(start - 1, end, body), start)

    def insert(self, args: list[str], body: list[str]) -> str:
        self._require_open()
        usage = "insert <line_number> followed by the new lines and end_of_insert"
        if len(args) != 1:
            raise UsageError(f"Usage: {usage}")
        after = self._line_number(args[0], usage)
        path, old = self._read_open()
        total = len(old.lines)
        if not 0 <= after <= total:
            raise UsageError(f"Invalid line {after}: the file has {total} lines; use 0..{total}.")
        return self._apply(path, old, old.replaced(after, after, body), after + 1)

    def _apply(self, path: str, old: Document, new: Document, line: int) -> str:
        """Write ``new``; for Python files restore ``old`` byte for byte when the edit adds lint
        errors, showing both views. When flake8 cannot run the edit stays, as in MLGym, with a note."""
        lint = path.endswith(".py")
        before = self._lint(path) if lint else []
        self.write(path, new.raw, old.mode)
        after = self._lint(path) if lint else []
        self.open_file, self.current_line = path, line
        if before is None or after is None:
            return (
                self.render(path, new.shown, line) + "\nFile updated, but the syntax check (flake8) "
                "could not run, so the edit was not checked for errors. Review the changes above and "
                "make sure they are correct. Edit the file again if needed."
            )
        added = _added_errors(before, after)
        if not added:
            return (
                self.render(path, new.shown, line) + "\nFile updated. Review the changes above and make "
                "sure they are correct (indentation, no duplicated or missing lines). Edit the file again "
                "if needed."
            )
        self.write(path, old.raw, old.mode)
        errors = "\n".join(f"- {e}" for e in added)
        return (
            f"Your edit was NOT applied: it introduces new errors:\n{errors}\n\n"
            f"This is how the file would look with your edit:\n-------------------------------------------------\n"
            f"{self.render(path, new.shown, line)}\n-------------------------------------------------\n"
            f"This is the file as it is now (unchanged):\n-------------------------------------------------\n"
            f"{self.render(path, old.shown, line)}\n-------------------------------------------------\n"
            "Fix your edit command (line range, indentation, names) and try again."
        )

    def _lint(self, path: str) -> list[str] | None:
        """flake8 findings of the gated classes as 'CODE message (line N)' strings, or None when
        flake8 did not run to completion (crash, timeout). Python runs isolated (``-I``), so modules
        in the workspace (a random.py, a usercustomize) cannot replace the ones flake8 imports."""
        argv = ["python", "-I", "-m", "flake8", "--isolated", f"--select={LINT_CODES}", "--", path]
        result = self._exec(argv)
        if "No module named flake8" in result.output:
            raise SandboxError("the sandbox's python has no flake8; install it in the sandbox image")
        findings = []
        for row in result.stdout.splitlines():
            if not row.startswith(f"{path}:"):
                continue
            parts = row[len(path) + 1 :].split(":", 2)
            if len(parts) == 3 and parts[0].strip().isdigit():
                findings.append(f"{parts[2].strip()} (line {parts[0].strip()})")
        if result.timed_out or result.exit_code not in (0, 1) or (result.exit_code == 1) != bool(findings):
            return None
        return findings


def _read_regular(local: Path) -> Document:
    """The content and mode of a host copy; anything but a regular file is an ``OSError``. The open
    neither waits on a named pipe nor follows a link."""
    fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{local.name} is not a regular file")
        return Document.parse(f.read(), stat.S_IMODE(mode))


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
