"""The file editor on the local sandbox: edits keep every byte they do not touch, files that stop
being regular files are observations, and the lint gate cannot be switched off from the workspace."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stsc.agent.aci import AgentComputerInterface
from stsc.agent.editor import Document
from stsc.agent.task import load_task
from stsc.config import AgentConfig
from stsc.sandbox.base import ExecResult


@pytest.fixture
def aci(toy_task: Path, sandbox_factory) -> Iterator[AgentComputerInterface]:
    sandbox = sandbox_factory.start(toy_task / "workspace", "test-editor")
    aci = AgentComputerInterface(sandbox, load_task(toy_task), AgentConfig(window=10))
    yield aci
    aci.close()
    sandbox.close()


def run(aci: AgentComputerInterface, action: str) -> str:
    observation = aci.execute(action)
    assert not observation.done
    return observation.text


def host(aci: AgentComputerInterface, name: str) -> Path:
    path = aci.sandbox.layout.to_host(f"{aci.sandbox.workspace}/{name}")
    assert path is not None
    return path


def put(aci: AgentComputerInterface, name: str, data: bytes, mode: int = 0o644) -> Path:
    path = host(aci, name)
    path.write_bytes(data)
    path.chmod(mode)
    return path


# -- lines and bytes ---------------------------------------------------------------------------------


def test_lines_split_on_newline_only_and_keep_their_own_ends() -> None:
    doc = Document.parse(b"a\x0cb\r\nc\xe2\x80\xa8d\nlast", 0o644)
    assert doc.lines == ["a\x0cb", "c\u2028d", "last"] and doc.ends == ["\r\n", "\n", ""]
    edited = doc.replaced(1, 2, ["C"])
    assert edited.raw == b"a\x0cb\r\nC\nlast"  # LF and CRLF equally common: new lines get LF


def test_new_lines_take_the_usual_line_end_and_a_missing_final_one_stays_missing() -> None:
    crlf = Document.parse(b"a\r\nb\r\nc", 0o644)
    assert crlf.replaced(3, 3, ["d"]).raw == b"a\r\nb\r\nc\r\nd"
    assert crlf.replaced(2, 3, ["C", "D"]).raw == b"a\r\nb\r\nC\r\nD"
    assert crlf.replaced(0, 3, []).raw == b""
    assert Document.parse(b"", 0o644).replaced(0, 0, ["x"]).raw == b"x\n"
    assert Document.parse(b"x\n", 0o644).replaced(1, 1, ["y"]).raw == b"x\ny\n"


def test_undecodable_bytes_survive_and_are_shown_as_replacement_characters() -> None:
    doc = Document.parse(b"caf\xe9\nline2\n", 0o644)
    assert doc.shown == ["caf\ufffd", "line2"]
    assert doc.replaced(1, 2, ["LINE2"]).raw == b"caf\xe9\nLINE2\n"
    assert doc.replaced(1, 2, ["bad \udcff \ud800"]).raw == b"caf\xe9\nbad ? ?\n"


@pytest.mark.parametrize(
    "original,action,expected",
    [
        (b"id,x\r\n1,a\r\n2,b\r\n", "edit 2:2\n1,A\nend_of_edit", b"id,x\r\n1,A\r\n2,b\r\n"),
        (b"alpha\x0cbeta\ngamma\xe2\x80\xa8delta\n", "edit 2:2\nG\nend_of_edit", b"alpha\x0cbeta\nG\n"),
        (b"caf\xe9\nline2\n", "edit 2:2\nLINE2\nend_of_edit", b"caf\xe9\nLINE2\n"),
        (b"x = 1\ny = 2", "edit 1:1\nx = 10\nend_of_edit", b"x = 10\ny = 2"),
        (b"x = 1\ny = 2", "insert 2\nz = 3\nend_of_insert", b"x = 1\ny = 2\nz = 3"),
    ],
)
def test_an_edit_changes_only_the_lines_it_names(aci, original: bytes, action: str, expected: bytes) -> None:
    path = put(aci, "f.py" if original.startswith(b"x") else "f.txt", original)
    run(aci, f"open {path.name}")
    assert "File updated" in run(aci, action)
    assert path.read_bytes() == expected


def test_an_edit_keeps_the_file_mode(aci) -> None:
    path = put(aci, "run.sh", b"#!/bin/sh\necho hi\n", 0o755)
    run(aci, "open run.sh")
    run(aci, "edit 2:2\necho hello\nend_of_edit")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert run(aci, "./run.sh") == "hello\n"


def test_a_rejected_edit_restores_the_original_bytes_exactly(aci) -> None:
    original = b'# caf\xc3\xa9\r\ns = "a\xe2\x80\xa8b"\r\nt = "c\\nd"\r\nprint(s, t)'
    path = put(aci, "keep.py", original, 0o755)
    run(aci, "open keep.py")
    out = run(aci, "edit 4:4\nprint(s, t, undefined_name)\nend_of_edit")
    assert "NOT applied" in out and "F821 undefined name 'undefined_name'" in out
    assert path.read_bytes() == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


# -- files that are no longer regular files ----------------------------------------------------------


@pytest.mark.parametrize("swap", ["rm a.txt && mkdir a.txt", "rm a.txt && mkfifo a.txt"])
@pytest.mark.parametrize(
    "action",
    [
        "edit 1:1\ntwo\nend_of_edit",
        "insert 1\ntwo\nend_of_insert",
        "goto 1",
        "scroll_down",
        "search_file one",
    ],
)
def test_an_open_file_replaced_by_a_folder_or_pipe_is_an_observation(aci, swap: str, action: str) -> None:
    run(aci, "echo one > a.txt")
    run(aci, "open a.txt")
    run(aci, swap)
    started = time.monotonic()
    out = run(aci, action)
    assert time.monotonic() - started < 10
    assert "is no longer a regular file" in out
    assert aci.state["open_file"] == "n/a"


@pytest.mark.parametrize("make", ["mkdir thing", "mkfifo thing"])
def test_opening_or_searching_a_folder_or_pipe_is_an_observation(aci, make: str) -> None:
    run(aci, make)
    started = time.monotonic()
    assert "is not a regular file" in run(aci, "open thing")
    assert "is not a regular file" in run(aci, "search_file x thing")
    assert "No matches" in run(aci, "search_dir x thing")
    assert time.monotonic() - started < 10
    assert "not found" in run(aci, "open missing.txt")


def test_a_file_too_large_for_the_editor_is_refused_before_the_host_reads_it(aci) -> None:
    run(aci, "truncate -s 17M big.csv; echo id,label > small.csv")
    for action in ("open big.csv", "search_file id big.csv"):
        assert "big.csv is too large for the editor (17.0 MB; the limit is 16 MB)" in run(aci, action)
    assert aci.state["open_file"] == "n/a"
    run(aci, "open small.csv")
    run(aci, "truncate -s 17M small.csv")  # grew past the limit while open
    out = run(aci, "goto 1")
    assert "small.csv is too large for the editor" in out and "head" in out
    assert aci.state["open_file"] == "n/a"


def test_an_open_file_that_vanished_is_an_observation(aci) -> None:
    run(aci, "echo one > a.txt")
    run(aci, "open a.txt")
    run(aci, "rm a.txt")
    assert "no longer exists" in run(aci, "edit 1:1\ntwo\nend_of_edit")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unwritable_file_is_an_observation(aci) -> None:
    path = put(aci, "ro.txt", b"one\n", 0o444)
    run(aci, "open ro.txt")
    assert "Cannot write" in run(aci, "edit 1:1\ntwo\nend_of_edit")
    assert path.read_bytes() == b"one\n"


# -- the lint gate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shadow", ["random.py", "logging.py", "token.py", "inspect.py", "platform.py"])
def test_workspace_modules_cannot_disable_the_lint(aci, shadow: str) -> None:
    put(aci, shadow, b"VALUE = 3\n")
    put(aci, "train.py", b"x = 1\nprint(x)\n")
    run(aci, "open train.py")
    out = run(aci, "edit 2:2\nprint(undefined_name)\nend_of_edit")
    assert "NOT applied" in out and "F821" in out


def test_a_crashing_linter_is_reported_not_taken_for_a_clean_file(aci, monkeypatch) -> None:
    put(aci, "train.py", b"x = 1\n")
    run(aci, "open train.py")
    real = aci.editor._exec

    def crash(argv: list[str]) -> ExecResult:
        if "flake8" in argv:
            return ExecResult(1, "", "Traceback (most recent call last):\nImportError: broken\n")
        return real(argv)

    monkeypatch.setattr(aci.editor, "_exec", crash)
    out = run(aci, "edit 1:1\nx = 2\nend_of_edit")
    assert "could not run" in out
    assert host(aci, "train.py").read_bytes() == b"x = 2\n"
