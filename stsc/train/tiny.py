"""The ``tiny`` student: a randomly initialised Qwen3 model with a tokenizer trained on the fly.

Everything is deterministic: the byte-level BPE tokenizer is trained on a fixed corpus (the prose
below plus the agent's own vocabulary: its prompt templates, command docs and the code the scripted
researcher writes; same corpus, same settings -> the same vocabulary and merges), so that agent
conversations tokenize compactly, and the weights are drawn from a generator seeded with
``StudentConfig.tiny_seed``. It exists for tests and smoke runs: it trains a
few steps in seconds on a CPU and exercises the same code paths as a real Qwen3 student.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from stsc.config import StudentConfig

TINY_VERSION = 2  # bump when the corpus or the construction changes (invalidates cached folders)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
]
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"

_CORPUS = """\
You are an autonomous machine learning researcher working in a sandboxed workspace.
Your task is to improve the baseline on the validation split and write submission.csv.
The evaluation script prints one JSON object with the priority metric, for example {"accuracy": 0.81}.
DISCUSSION
First I will look at the files in the workspace to understand the data and the baseline.
```
ls -la data/
cat baseline.py
python baseline.py
python evaluate.py --submission_file submission.csv
```
The baseline trains a logistic regression model on the training features and scores 0.74 accuracy.
I will try a gradient boosting classifier with more trees and a smaller learning rate.
import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

def main():
    train = pd.read_csv("data/train.csv")
    valid = pd.read_csv("data/validation.csv")
    test = pd.read_csv("data/test.csv")
    features = [c for c in train.columns if c not in ("id", "target")]
    model = GradientBoostingClassifier(n_estimators=300, learning_rate=0.05, max_depth=3)
    model.fit(train[features], train["target"])
    print("validation accuracy", accuracy_score(valid["target"], model.predict(valid[features])))
    pd.DataFrame({"id": test["id"], "target": model.predict(test[features])}).to_csv(
        "submission.csv", index=False
    )

if __name__ == "__main__":
    main()
Observation: validation accuracy 0.8125. The new model beats the baseline by seven points.
The score improved, so I will validate the submission and then submit it.
Traceback (most recent call last): File "train.py", line 12, in <module> KeyError: 'target'
The error says the column is missing; the label column in this dataset is called "species".
Regression tasks report rmse or r2; classification tasks report accuracy, f1 or auc.
The quick brown fox jumps over the lazy dog while the model learns the mapping from inputs to labels.
Data: 1,234 rows, 12 columns, 3 classes; mean 0.5, std 1.0; epochs 10, batch size 32, seed 0.
"""


def agent_corpus() -> str:
    """The agent-side text of this checkout: command docs, agent prompt templates, scripted code."""
    from stsc.agent import policies
    from stsc.agent.tools import command_docs

    prompts = Path(__file__).resolve().parents[2] / "conf" / "prompts"
    sources = Path(policies.__file__).parent
    texts = [command_docs()]
    texts += [p.read_text(encoding="utf-8") for p in sorted(prompts.glob("agent_*.j2"))]
    texts += [(sources / name).read_text(encoding="utf-8") for name in ("scripted.py", "solutions.py")]
    return "\n".join(texts)


def corpus_texts() -> list[str]:
    """The fixed training corpus, one paragraph (or line) per item."""
    return [p for p in (_CORPUS + "\n" + agent_corpus()).split("\n") if p.strip()]


def fingerprint(cfg: StudentConfig, template: str) -> str:
    """Content hash of everything that decides the tiny student's files."""
    parts = [
        str(TINY_VERSION),
        "\n".join(corpus_texts()),
        ",".join(SPECIAL_TOKENS),
        str(cfg.tiny_hidden_size),
        str(cfg.tiny_layers),
        str(cfg.tiny_vocab_size),
        str(cfg.tiny_seed),
        str(cfg.context_length),
        template,
    ]
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def build_tokenizer(vocab_size: int) -> Any:
    """Train a byte-level BPE tokenizer on the fixed corpus (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = corpus_texts()
    backend.train_from_iterator(texts * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=10**9,
    )


def build_model(cfg: StudentConfig, tokenizer: Any) -> Any:
    """A Qwen3 causal LM with weights drawn from a generator seeded by ``cfg.tiny_seed``."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    hidden = cfg.tiny_hidden_size
    heads = 4
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        head_dim=max(8, hidden // heads),
        max_position_embeddings=cfg.context_length,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.tiny_seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def write_tiny_student(cfg: StudentConfig, folder: Path) -> None:
    """Build the tiny student and save it as a Hugging Face folder (model, tokenizer, template).

    Raises ``ConfigError`` if ``cfg.chat_template`` is unknown or gives wrong assistant masks.
    """
    from stsc.train.templates import install_training_template

    tokenizer = build_tokenizer(cfg.tiny_vocab_size)
    install_training_template(tokenizer, cfg.chat_template)
    model = build_model(cfg, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_random_twin(cfg: StudentConfig, folder: Path, device: str = "cpu") -> None:
    """A randomly initialised model of ``cfg.architecture``'s shape (Qwen3Config kwargs) in
    ``cfg.torch_dtype``, with the on-the-fly tokenizer, saved as a Hugging Face folder.

    Benchmarks use it to measure a real model's throughput without downloading its weights.
    Raises ``ConfigError`` when ``cfg.architecture`` is empty.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    from stsc.errors import ConfigError
    from stsc.train.students import torch_dtype
    from stsc.train.templates import install_training_template

    if not cfg.architecture:
        raise ConfigError(f"student {cfg.name!r} has no `architecture` to build a random twin from")
    tokenizer = build_tokenizer(cfg.tiny_vocab_size)
    install_training_template(tokenizer, cfg.chat_template)
    config = Qwen3Config(
        **{**cfg.architecture, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    )
    assert config.vocab_size >= len(tokenizer), "the architecture's vocabulary must hold the tokenizer's"
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(cfg.tiny_seed)
        model = Qwen3ForCausalLM(config).to(torch_dtype(cfg.torch_dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
