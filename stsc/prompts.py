"""Prompt templates: Jinja2 files ``conf/prompts/<name>.j2``, rendered strictly.

``render("propose", topic=topic)`` returns a ``RenderedPrompt`` with the text and its sha256, so
every model call can record which template produced its prompt (pass ``rendered.meta`` as the
``meta`` of ``LLMClient.acomplete``). A variable the template uses but the caller did not pass
fails with ``PromptError`` naming the template and the variable; so does a missing template (the
message lists the available ones). Templates are plain text (no HTML escaping); a trailing newline
is kept. Names may contain ``/`` for sub-folders (``agent/system``).

Compiled templates are cached per folder and reloaded when the file changes.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stsc
from stsc.errors import PromptError

TEMPLATE_SUFFIX = ".j2"
# The templates a template pulls in by name: {% include "x.j2" %}, extends, import, from ... import.
_REFERENCE = re.compile(r"""\{%-?\s*(?:include|extends|import|from)\s+["']([^"']+)["']""")


@dataclass(frozen=True)
class RenderedPrompt:
    name: str  # template name, without the suffix
    text: str
    sha256: str  # of ``text`` (UTF-8)

    @property
    def meta(self) -> dict[str, str]:
        """Labels recorded with a model call: ``{"prompt": name, "prompt_sha256": sha256}``."""
        return {"prompt": self.name, "prompt_sha256": self.sha256}


@functools.lru_cache(maxsize=1)
def default_prompts_dir() -> Path:
    """``conf/prompts`` of the checkout stsc is imported from."""
    return Path(stsc.__file__).resolve().parents[1] / "conf" / "prompts"


@functools.lru_cache(maxsize=64)
def _resolved(folder: str) -> Path:
    """``folder`` made absolute (agents render a template every step; resolving is a syscall per
    path component)."""
    return Path(folder).resolve()


def available(prompts_dir: Path | None = None) -> list[str]:
    """Template names found under ``prompts_dir`` (default: ``default_prompts_dir()``), sorted."""
    root = Path(prompts_dir) if prompts_dir is not None else default_prompts_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.relative_to(root).as_posix()[: -len(TEMPLATE_SUFFIX)] for p in root.rglob(f"*{TEMPLATE_SUFFIX}")
    )


def render(name: str, /, prompts_dir: Path | None = None, **variables: Any) -> RenderedPrompt:
    """Render template ``name`` with ``variables``.

    ``name`` is positional-only, so a template may itself use a variable called ``name``.
    Raises PromptError when the template does not exist, does not parse, or uses an undefined
    variable (or attribute).
    """
    import jinja2

    root = _resolved(str(prompts_dir)) if prompts_dir is not None else default_prompts_dir()
    name = name.removesuffix(TEMPLATE_SUFFIX)
    path = root / f"{name}{TEMPLATE_SUFFIX}"
    try:
        template = _environment(str(root)).get_template(f"{name}{TEMPLATE_SUFFIX}")
    except jinja2.TemplateNotFound:
        raise _missing(repr(name), path, root) from None
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"prompt template {name!r} ({path}), line {exc.lineno}: {exc.message}") from exc
    try:
        text = template.render(**variables)
    except jinja2.UndefinedError as exc:
        passed = ", ".join(sorted(variables)) or "none"
        raise PromptError(
            f"prompt template {name!r} ({path}): {exc.message}; pass it to render() "
            f"(variables passed: {passed})"
        ) from exc
    return RenderedPrompt(name=name, text=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


def source_digest(name: str, prompts_dir: Path | str | None = None) -> str:
    """sha256 of the source of template ``name`` and of every template it includes, extends or
    imports (recursively): it changes exactly when an edit changes what the template renders.
    Raises PromptError for a missing template (the message lists the available ones)."""
    root = _resolved(str(prompts_dir)) if prompts_dir is not None else default_prompts_dir()
    digest, seen, todo = hashlib.sha256(), set(), [name]
    while todo:
        current = todo.pop(0).removesuffix(TEMPLATE_SUFFIX)
        if current in seen:
            continue
        seen.add(current)
        path = root / f"{current}{TEMPLATE_SUFFIX}"
        try:
            text = path.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            wanted = f"{current!r}" if current == name else f"{current!r} (used by {name!r})"
            raise _missing(wanted, path, root) from None
        digest.update(f"{current}\0{text}\0".encode())
        todo.extend(_REFERENCE.findall(text))
    return digest.hexdigest()


def _missing(wanted: str, path: Path, root: Path) -> PromptError:
    choices = ", ".join(available(root)) or "none"
    return PromptError(f"no prompt template {wanted} ({path}); available in {root}: {choices}")


@functools.lru_cache(maxsize=32)
def _environment(root: str) -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=True,
    )
