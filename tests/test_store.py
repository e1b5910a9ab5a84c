"""Atomic writes and the JSONL journal."""

from __future__ import annotations

from pathlib import Path

from stsc.store import (
    JsonlJournal,
    atomic_write_json,
    completed_items,
    iter_jsonl,
    overwrite_bytes,
    read_json,
)


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "item.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert read_json(target) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["item.json"]


def test_overwrite_rewrites_in_place_and_cuts_a_shorter_version(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    overwrite_bytes(path, b'{"steps": [1, 2, 3, 4]}')
    inode = path.stat().st_ino
    overwrite_bytes(path, b'{"steps": [1]}')

    assert path.read_bytes() == b'{"steps": [1]}' and path.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.json"]


def test_a_torn_last_journal_line_is_ignored_and_repaired(tmp_path: Path) -> None:
    j = JsonlJournal(tmp_path / "j.jsonl")
    j.append({"a": 1})
    with open(j.path, "a") as f:
        f.write('{"a": 2, "tor')  # a crash mid-write
    assert [r["a"] for r in iter_jsonl(j.path)] == [1]
    j.append({"a": 3})
    assert [r["a"] for r in j.read()] == [1, 3]


def test_completed_items_ignores_temp_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "one.json", {})
    (tmp_path / ".two.json.abc.tmp").write_text("{")
    assert completed_items(tmp_path) == {"one"}
