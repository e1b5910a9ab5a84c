"""Prompt templates render strictly and carry a hash of what they rendered."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import stsc
from stsc.errors import ConfigError, PromptError
from stsc.prompts import RenderedPrompt, available, default_prompts_dir, render


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    (root / "agent").mkdir(parents=True)
    (root / "greet.j2").write_text("Hello {{ who }}, task {{ name }}.\n")
    (root / "agent" / "system.j2").write_text("{% for t in tools %}- {{ t }}\n{% endfor %}")
    (root / "attr.j2").write_text("{{ topic.title }} <{{ topic.area }}> & more")
    return root


def test_render_fills_variables_and_hashes_the_text(prompts: Path):
    result = render("greet", prompts, who="world", name="iris")

    assert result == RenderedPrompt(
        name="greet",
        text="Hello world, task iris.\n",
        sha256=hashlib.sha256(b"Hello world, task iris.\n").hexdigest(),
    )
    assert result.meta == {"prompt": "greet", "prompt_sha256": result.sha256}


def test_templates_in_subfolders_and_loops(prompts: Path):
    assert render("agent/system", prompts_dir=prompts, tools=["ls", "cat"]).text == "- ls\n- cat\n"


def test_text_is_not_html_escaped(prompts: Path):
    text = render("attr", prompts, topic={"title": "Fraud", "area": "tabular"}).text

    assert text == "Fraud <tabular> & more"


def test_a_missing_variable_names_the_template_and_the_variable(prompts: Path):
    with pytest.raises(PromptError, match=r"greet.*'who' is undefined.*variables passed: name"):
        render("greet", prompts, name="iris")


def test_a_missing_attribute_fails_too(prompts: Path):
    with pytest.raises(PromptError, match="attr.*area"):
        render("attr", prompts, topic={"title": "Fraud"})


def test_a_missing_template_lists_the_available_ones(prompts: Path):
    with pytest.raises(PromptError, match="'nope'.*agent/system, attr, greet") as failure:
        render("nope", prompts)
    assert isinstance(failure.value, ConfigError)


def test_a_syntax_error_reports_template_and_line(prompts: Path):
    (prompts / "broken.j2").write_text("line one\n{% if x %}never closed\n")

    with pytest.raises(PromptError, match="'broken'.*line"):
        render("broken", prompts, x=1)


def test_edits_to_a_template_are_picked_up(prompts: Path):
    assert render("greet", prompts, who="a", name="b").text.startswith("Hello")
    path = prompts / "greet.j2"
    path.write_text("Bye {{ who }}")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    assert render("greet", prompts, who="a").text == "Bye a"


def test_suffix_in_the_name_is_accepted(prompts: Path):
    assert render("greet.j2", prompts, who="x", name="y").name == "greet"


def test_available_lists_template_names(prompts: Path):
    assert available(prompts) == ["agent/system", "attr", "greet"]
    assert available(prompts / "missing") == []


def test_default_folder_is_the_repository_conf_prompts():
    assert default_prompts_dir() == Path(stsc.__file__).resolve().parents[1] / "conf" / "prompts"
