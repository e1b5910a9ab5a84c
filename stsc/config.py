"""Typed config schemas for every config group, registered with Hydra's ConfigStore.

Compose -> ``to_object`` (OmegaConf validates types against these schemas) -> ``validate`` once at
the entry point -> never mutated afterwards. Each field documents its meaning and unit where it is
declared. ``conf/<group>/<option>.yaml`` files fill these schemas; an unknown key or a wrong type
fails at composition with the key's full name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stsc.errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Shared pieces


@dataclass
class LLMConfig:
    """One model endpoint, called through ``stsc.llm.LLMClient`` (litellm)."""

    model: str = "openai/gpt-5"  # litellm provider/model string
    api_base: str | None = None  # OpenAI-compatible base URL (vLLM, a local server)
    api_key_env: str | None = None  # name of the env var holding the key; None = provider default
    temperature: float = 0.0
    top_p: float = 0.95
    max_tokens: int = 4096  # completion tokens per call
    timeout_s: float = 600.0  # per call
    max_retries: int = 5  # on 429, 5xx, timeouts; exponential backoff
    backoff_s: float = 2.0  # first backoff; doubles per retry (jittered)
    concurrency: int = 16  # calls in flight at once
    input_cost_per_token: float | None = None  # USD; overrides litellm's price map (local models)
    output_cost_per_token: float | None = None  # USD
    budget_usd: float | None = None  # hard cap for one stage's calls; None = unlimited
    cache: bool = True  # content-addressed response cache under the store
    send_seed: bool = False  # policies send the episode seed with every call (vLLM, OpenAI honour it)
    extra: dict[str, Any] = field(default_factory=dict)  # passed to litellm.completion as is


# --------------------------------------------------------------------------------------------------
# Synthesis groups


@dataclass
class TopicSeed:
    area: str = ""
    title: str = ""
    description: str = ""


@dataclass
class TopicsConfig:
    """Topic sampling (paper step 1)."""

    n: int = 40  # topics to produce
    areas: dict[str, float] = field(default_factory=dict)  # area -> sampling weight
    seeds: list[TopicSeed] = field(default_factory=list)  # curated topics, used first
    expand_with_llm: bool = False  # ask ``llm`` for more topics until ``n``
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: str = "topics_expand"  # template name under conf/prompts/
    dedup_threshold: float = 0.8  # token-set Jaccard above which two titles are duplicates
    batch_size: int = 10  # topics asked per model call
    max_llm_calls: int = 20  # cap on expansion calls (each retry of malformed output counts)
    max_attempts: int = 3  # re-asks of one batch whose output is malformed before it is dropped


@dataclass
class ProposeConfig:
    """Task and dataset proposal per topic (paper step 2)."""

    kind: str = "catalog"  # "llm" (model proposes) | "catalog" (match topics to catalog datasets)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: str = "propose"
    max_candidates: int = 3  # dataset ids kept per proposal
    max_attempts: int = 3  # re-asks on malformed output before dropping the topic


@dataclass
class HubConfig:
    """Where datasets are looked up (paper step 3)."""

    kind: str = "offline"  # "huggingface" | "offline"
    endpoint: str | None = None  # Hub API base URL; None = huggingface_hub's default
    token_env: str = "HF_TOKEN"  # env var holding the Hub token (never logged)
    search_limit: int = 5  # search hits considered when an exact id does not exist
    timeout_s: float = 30.0  # per Hub API request
    catalog_dir: str | None = None  # offline catalog parquet folder; None = <store>/catalog
    catalog_sources: list[str] = field(
        default_factory=lambda: ["sklearn", "vega_datasets", "palmerpenguins"]
    )  # which PyPI packages the offline catalog is exported from


@dataclass
class DatasetFilterConfig:
    """Rules a candidate dataset must pass; every rejection records its rule."""

    enabled: bool = True  # false = no verification (ablation): candidates pass unchecked, even unknown ids
    license_allowlist: list[str] = field(
        default_factory=lambda: [
            "mit",
            "apache-2.0",
            "bsd",
            "bsd-2-clause",
            "bsd-3-clause",
            "cc0-1.0",
            "cc-by-3.0",
            "cc-by-4.0",
            "cc-by-sa-4.0",
            "odc-by",
            "pddl",
            "public-domain",
        ]
    )
    allow_unknown_license: bool = False
    allow_gated: bool = False
    min_downloads: int = 0
    max_size_bytes: int = 5_000_000_000  # also judged from size_categories tags
    min_rows: int = 100
    max_rows: int = 10_000_000
    require_columns: bool = True  # a usable tabular/text schema must be known
    decontaminate: bool = True  # reject the 13 MLGym tasks' datasets and near-duplicates
    blocklist: list[str] = field(default_factory=list)  # extra ids to reject
    near_duplicate_threshold: float = 0.5  # name-token Jaccard against the MLGym datasets
    max_accepted_per_proposal: int = 1  # candidates are alternatives: once this many passed, the
    # rest of a proposal's candidates are not checked (0 = check and record every candidate)


@dataclass
class GeneratorConfig:
    """Task code generation (paper step 4)."""

    kind: str = "template"  # "template" (deterministic, no model) | "llm"
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: str = "generate_task"
    fix_prompt: str = "fix_task"
    tasks_per_dataset: int = 3  # template: distinct tasks (targets/metrics) per dataset
    max_train_rows: int = 5000  # template: rows sampled for the train split
    valid_fraction: float = 0.15
    test_fraction: float = 0.2
    # share of the test rows that `validate` scores (the public rows); the final score uses the rest,
    # so an agent cannot tune on the rows it is ranked by. 0 = validate scores all test rows (MLGym).
    # llm: the contract asks evaluate.py to honour the split; the build draws the public ids.
    public_fraction: float = 0.3
    training_timeout_s: int = 300  # written to the task yaml (MLGym training_timeout)


@dataclass
class ValidateConfig:
    """Self-debug validation and acceptance gates (paper step 5)."""

    self_debug: bool = True  # send failures back to the generator model for a fix
    max_rounds: int = 3  # generator fix rounds before the task is discarded
    timeout_s: int = 300  # per baseline/evaluation run
    gate_json_output: bool = True  # evaluate.py prints exactly one JSON object with the metric
    gate_baseline_finite: bool = True
    gate_beatable: bool = True  # baseline not already at the metric's optimum
    gate_exploit_probes: bool = True  # sample submission / constant prediction don't beat baseline
    gate_no_leak: bool = True  # workspace holds no test labels
    gate_runtime: bool = True  # baseline + evaluation finish within training_timeout
    gate_public_split: bool = True  # evaluate.py scores the public rows for validate, the others for submit
    concurrency: int = 2  # tasks validated at once


# --------------------------------------------------------------------------------------------------
# Execution


@dataclass
class SandboxConfig:
    """Where untrusted code runs (``stsc.sandbox``). Limits apply to every command."""

    backend: str = "local"  # "local" | "docker"
    memory_mb: int = 4096  # docker: cgroup memory (no swap); local: RLIMIT_AS per process, MiB
    cpus: float = 1.0  # docker: CPU quota; both: thread count of BLAS/OpenMP inside (OMP_NUM_THREADS)
    pids_limit: int = 256  # docker: pids cgroup; local: RLIMIT_NPROC above the sandbox user's count
    nofile: int = 1024  # open files per process (RLIMIT_NOFILE)
    max_file_mb: int | None = 32768  # largest file a command may write (RLIMIT_FSIZE), MiB; None = no limit
    cpu_time_s: int | None = None  # local backend: RLIMIT_CPU per command, s; None = no limit
    output_limit_bytes: int = 1_000_000  # per stream per command; the rest is discarded
    network: bool = False  # tasks that must reach the Hub can enable it
    isolation: str = "auto"  # local backend: "auto" (bwrap if present) | "bwrap" | "none"
    image: str = "stsc-task:latest"  # docker backend image, built by `python -m stsc.sandbox.image`
    user: str = "1000:1000"  # uid:gid commands run as: docker always; local when stsc runs as root
    gpus: str | None = None  # "all" or "0,1": docker device requests / local device nodes; None = none
    env_allowlist: list[str] = field(
        default_factory=lambda: ["PATH", "LANG", "LC_ALL", "TZ", "PYTHONHASHSEED"]
    )  # host variables passed in (glob patterns allowed); names that look secret never pass
    python: str | None = None  # local: the interpreter `python` runs; None = the running one
    workdir: str | None = None  # host folder holding sandbox folders; None = the system temp dir
    docker_host: str | None = None  # docker engine URL; None = DOCKER_HOST or the local socket


@dataclass
class HistoryConfig:
    """What the model sees of the chat: the first user message (the task) and the last ``n``
    observations verbatim, older ones replaced by ``Old output omitted (K lines)``; or everything."""

    kind: str = "last_n_observations"  # "last_n_observations" | "full"
    n: int = 5  # observations kept verbatim (MLGym default 5)


@dataclass
class AgentConfig:
    """The agent-computer interface (MLGym semantics; reference/mlgym.md §3)."""

    name: str = "default"  # appears in run folder names
    system_template: str = "agent_system"  # template names under conf/prompts/
    instance_template: str = "agent_instance"
    next_step_template: str = "agent_next_step"
    format_error_template: str = "agent_format_error"
    history: HistoryConfig = field(default_factory=HistoryConfig)
    max_steps: int = 50  # executed actions; at the limit the workspace is auto-submitted
    cost_limit_usd: float = 4.0  # model spend of one episode (USD); above it: exit_cost; 0 = no limit
    context_limit_tokens: int = 32768  # prompt + completion tokens of one call; above it: exit_context
    command_timeout_s: float = 25.0  # ordinary commands
    training_timeout_s: float | None = None  # None = the task's training_timeout
    max_format_retries: int = 3  # malformed or refused responses in a row that end the episode (exit_format)
    window: int = 1000  # lines shown by `open`
    observation_limit_chars: int = 100_000  # longer command output keeps its head and tail; 0 = no cap
    prompts_dir: str | None = None  # folder of the templates; None = conf/prompts of the stsc checkout
    blocked_commands: list[str] = field(
        default_factory=lambda: [
            "vim",
            "vi",
            "emacs",
            "nano",
            "nohup",
            "gdb",
            "less",
            "more",
            "man",
            "tail -f",
            "top",
            "htop",
            "watch",
            "ipython",
            "jupyter",
        ]
    )  # programs refused before they run (bare python/bash prompts are always refused)


@dataclass
class PolicyConfig:
    """Who acts in an episode: an LLM, or an offline policy named for what it is."""

    kind: str = "scripted"  # "llm" | "scripted" | "submit_baseline" | "transformers"
    name: str = "scripted"  # label used in run folders and tables
    llm: LLMConfig = field(default_factory=LLMConfig)
    model_path: str | None = None  # transformers policy: checkpoint folder (None = the sft output)
    # transformers policy: new tokens per reply; None = eval.student_max_tokens in evaluation, else 256
    max_new_tokens: int | None = None
    device: str = "auto"  # transformers policy: "auto" (first CUDA device when present) | "cpu" | "cuda:N"
    attempts: int = 3  # scripted policy: model variants tried before submitting


@dataclass
class SplitConfig:
    """Held-out split of the task library, by dataset (no held-out task shares a training dataset)."""

    heldout_fraction: float = 0.3
    seed: int = 0


@dataclass
class RolloutConfig:
    """Teacher trajectory collection (paper step 6). An episode holds its sandbox from start to
    end, so at most ``min(concurrency, sandbox_concurrency)`` episodes run at once."""

    per_task: int = 2  # trajectories per training task
    concurrency: int = 4  # episodes at once
    llm_concurrency: int = 16  # model calls in flight across episodes (replaces teacher.llm.concurrency)
    sandbox_concurrency: int = 4  # sandboxes alive at once
    # episodes working on the host at once, from a model reply to the next call (a command shorter
    # than a tenth of a second, the step's record, the next prompt); the rest wait in order. 0 = two per CPU core
    step_turns: int = 0
    max_infra_retries: int = 3  # retries of an episode after infrastructure failure
    budget_usd: float | None = None  # USD for the whole stage (resumed runs included); None = unlimited
    per_task_budget_usd: float | None = None  # USD per training task; None = unlimited
    max_tasks: int | None = None  # cap on training tasks used (None = all)
    trace: bool = False  # MLflow tracing of model calls
    infra_backoff_s: float = 5.0  # wait before the first retry after an infrastructure failure; doubles
    progress_interval_s: float = 30.0  # seconds between progress log lines when stderr is not a terminal
    bundles: bool = True  # write one .tar.gz of run folders per task and log it as a stage artifact


@dataclass
class CurateConfig:
    """Trajectory filters and SFT set building (paper step 7)."""

    require_success: bool = True  # at least one scored submission
    require_beats_baseline: bool = False
    # 48K (paper, (s)): the example before truncation, with the student's tokenizer; None = no filter
    max_total_tokens: int | None = 49152
    dedup: bool = True
    truncate: bool = True  # cut to max_seq_len at turn boundaries
    max_seq_len: int = 32768  # 32K (paper, (s))
    history_view: str = "processed"  # "processed" (what the model saw) | "full"
    # "trajectory": one multi-turn example per trajectory, every response trained in the final view;
    # "step": one example per response, in the exact view the model had at that step, trained on
    # that response only (consistent with last_n_observations; roughly steps-times more tokens)
    examples: str = "trajectory"
    include_system: bool = True
    thinking: str = "keep"  # "keep" | "strip" <think> blocks
    task_fraction: float = 1.0  # fraction of training tasks kept (scaling sweeps)
    seed: int = 0
    concurrency: int = 0  # processes converting runs; 0 = one per CPU (small inputs use one)


@dataclass
class StudentConfig:
    """A model to fine-tune and evaluate (``stsc.train.students``).

    ``chat_template`` names the *training* chat template installed on the tokenizer: it must wrap
    assistant output in ``{% generation %}`` markers so that only assistant tokens are trained.
    Choices: ``qwen3`` (or any other ``<name>`` with ``trl/chat_templates/<name>_training.jinja``),
    ``chatml``, ``smollm2`` (stsc's ChatML templates), ``native`` (keep the tokenizer's own template;
    it must carry the markers or be one TRL knows how to patch).
    """

    name: str = "tiny"
    source: str = "tiny"  # "hub" | "gguf_package" | "tiny"
    model_id: str = ""  # Hub id or local folder (source=hub)
    revision: str | None = None  # source=hub: branch, tag or commit sha; None = the default branch
    package: str | None = None  # source=gguf_package: PyPI package holding the weights
    gguf_file: str | None = None  # source=gguf_package: file name inside the package folder
    chat_template: str = "qwen3"  # training chat template (see the class docstring)
    context_length: int = 32768  # tokens the model handles; sft.max_length is capped to it
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )  # module names LoRA adapts (the recommended set for this architecture)
    torch_dtype: str = "float32"  # dtype of the weights (LoRA: loaded and merged in; full fine-tuning
    # with sft.bf16 trains float32 master weights and saves in this dtype)
    attn_implementation: str = "sdpa"  # "sdpa" | "eager" | "flash_attention_2" | "flash_attention_3"
    architecture: dict[str, Any] = field(
        default_factory=dict
    )  # Qwen3Config kwargs of this model's shape: builds a random-weight twin without download (benchmarks)
    tiny_hidden_size: int = 64  # source=tiny only
    tiny_layers: int = 2  # source=tiny only
    tiny_vocab_size: int = 2048  # source=tiny only: BPE vocabulary trained on the fly (upper bound)
    tiny_seed: int = 0  # source=tiny only: seeds the random weights


@dataclass
class SFTConfig:
    """Supervised fine-tuning with trl (paper step 8)."""

    method: str = "lora"  # "lora" | "full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_length: int = 32768  # tokens per example
    overlong: str = "truncate"  # "truncate" | "drop": examples over max_length, always counted
    packing: bool = False  # only with varlen attention (flash-attention)
    assistant_only_loss: bool = True
    gradient_checkpointing: bool = False
    bf16: bool = False
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    logging_steps: int = 1
    save_steps: int = 500  # optimizer steps between checkpoints (resume points); 0 = none, no resume
    save_total_limit: int = 2  # checkpoints kept; older ones are deleted
    seed: int = 0  # with the run seed, seeds LoRA initialisation, data order and dropout
    launcher: str = "none"  # "none" (this process) | "accelerate"
    num_processes: int = 1  # accelerate: processes (GPUs) on this machine
    distributed: str = "none"  # "none" (DDP under accelerate) | "zero3" | "fsdp2"
    accelerate_config: str | None = None  # accelerate yaml replacing the bundled one for `distributed`
    main_process_port: int | None = None  # accelerate rendezvous port; None = a free one per run
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"  # transformers optimizer name
    group_by_length: bool = False  # batch similar lengths together (less padding; a resumed epoch reshuffles)
    dataset_num_proc: int | None = None  # processes tokenizing the SFT set; None = this one
    log_model: bool = False  # also log the whole final model folder as an MLflow artifact (large)


@dataclass
class EvalModelConfig:
    """One evaluated method; ``policy.model_path: null`` with kind=transformers means the SFT output.

    ``name`` labels the method in run folders (``/`` becomes ``--``) and AUP tables: unique, without
    ``__``, and neither ``baseline`` (the pseudo-method) nor ``base``/``sft`` while those are included.
    """

    name: str = "baseline_policy"
    policy: PolicyConfig = field(default_factory=PolicyConfig)


@dataclass
class EvalConfig:
    """Evaluation of students and references (paper step 9)."""

    suite: str = "library"  # "library" (held-out stsc tasks) | "mlgym"
    mlgym_root: str | None = None  # checkout of MLGym (suite=mlgym)
    tasks: list[str] = field(default_factory=list)  # empty = all tasks of the suite
    runs_per_task: int = 4
    max_steps: int = 50
    temperature: float = 0.0
    cost_limit_usd: float = 4.0
    models: list[EvalModelConfig] = field(default_factory=list)
    include_sft_student: bool = True  # evaluate this run's SFT checkpoint as model "sft"
    include_base_student: bool = True  # and the student before fine-tuning as model "base"
    bootstrap_samples: int = 1000  # resamples of runs for the AUP intervals (0 = none); seed = run seed
    concurrency: int = 2  # episodes at once (and sandboxes alive at once)
    top_p: float = 0.95  # nucleus sampling of every method (MLGym protocol: 0.95); part of run folder names
    student_backend: str = "transformers"  # "transformers" (in-process) | "vllm" (OpenAI-compatible server)
    student_max_tokens: int = 1024  # completion tokens per step of the base/sft students
    vllm_api_base: str = "http://127.0.0.1:8000/v1"  # vllm backend: server of the SFT checkpoint ("sft")
    vllm_base_api_base: str = "http://127.0.0.1:8001/v1"  # vllm backend: server of the base student ("base")
    max_infra_retries: int = 3  # retries of an episode after infrastructure failure (sandbox, provider)
    infra_backoff_s: float = 5.0  # wait before the first such retry, s; doubles per retry
    budget_usd: float | None = None  # USD for the whole stage, all methods and resumed runs; None = unlimited


@dataclass
class TrackingConfig:
    """MLflow. ``uri: null`` = sqlite under <root>/mlruns."""

    uri: str | None = None
    experiment: str = "stsc"
    artifact_location: str | None = None  # None = <root>/mlruns/artifacts
    enabled: bool = True


# --------------------------------------------------------------------------------------------------
# Root


@dataclass
class RootConfig:
    stages: list[str] = field(default_factory=list)  # empty = every registered stage, in order
    force: list[str] = field(default_factory=list)  # stages recomputed despite a cache hit
    seed: int = 0
    dry_run: bool = False  # print the plan (stages, items, calls, tokens, USD) and stop
    root: str = "."  # project root: mlruns/ and the store live under it
    store: str | None = None  # stage store; None = <root>/mlruns/store
    label: str = ""  # free-form run label (not part of any cache key)
    plugins: list[str] = field(default_factory=list)  # modules imported first; they may register stages
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    propose: ProposeConfig = field(default_factory=ProposeConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    dataset_filter: DatasetFilterConfig = field(default_factory=DatasetFilterConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    teacher: PolicyConfig = field(default_factory=PolicyConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    @property
    def store_path(self) -> Path:
        return Path(self.store).resolve() if self.store else self.root_path / "mlruns" / "store"


GROUPS: dict[str, type] = {
    "topics": TopicsConfig,
    "propose": ProposeConfig,
    "hub": HubConfig,
    "dataset_filter": DatasetFilterConfig,
    "generator": GeneratorConfig,
    "validate": ValidateConfig,
    "sandbox": SandboxConfig,
    "agent": AgentConfig,
    "teacher": PolicyConfig,
    "split": SplitConfig,
    "rollout": RolloutConfig,
    "curate": CurateConfig,
    "student": StudentConfig,
    "sft": SFTConfig,
    "eval": EvalConfig,
    "tracking": TrackingConfig,
}

CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    # dotted key -> (attribute path, valid values); checked by ``validate``
    "propose.kind": ("propose.kind", ("llm", "catalog")),
    "hub.kind": ("hub.kind", ("huggingface", "offline")),
    "generator.kind": ("generator.kind", ("template", "llm")),
    "sandbox.backend": ("sandbox.backend", ("local", "docker")),
    "sandbox.isolation": ("sandbox.isolation", ("auto", "bwrap", "none")),
    "agent.history.kind": ("agent.history.kind", ("last_n_observations", "full")),
    "teacher.kind": ("teacher.kind", ("llm", "scripted", "submit_baseline", "transformers")),
    "curate.history_view": ("curate.history_view", ("processed", "full")),
    "curate.examples": ("curate.examples", ("trajectory", "step")),
    "curate.thinking": ("curate.thinking", ("keep", "strip")),
    "student.source": ("student.source", ("hub", "gguf_package", "tiny")),
    "sft.method": ("sft.method", ("lora", "full")),
    "sft.overlong": ("sft.overlong", ("truncate", "drop")),
    "sft.launcher": ("sft.launcher", ("none", "accelerate")),
    "sft.distributed": ("sft.distributed", ("none", "zero3", "fsdp2")),
    "eval.suite": ("eval.suite", ("library", "mlgym")),
    "eval.student_backend": ("eval.student_backend", ("transformers", "vllm")),
}


def register_configs(light: bool = False) -> None:
    """Register the root schema with Hydra's ConfigStore (idempotent); it types every group node.

    ``light`` stores an untyped empty root instead: ``--help`` lists groups by deep-copying the
    ConfigStore once per group, which with the full schema doubles start-up time.
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="root_schema", node={} if light else RootConfig)


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# litellm options the model client sets itself from LLMConfig fields (or never sends): given in
# ``llm.extra`` they would collide with its own, or, for the server address, bypass the rule that
# a local server never receives the provider's key.
CLIENT_OWNED_OPTIONS = {
    "model": "llm.model",
    "messages": None,
    "num_retries": "llm.max_retries",
    "max_retries": "llm.max_retries",
    "stream": None,
    "timeout": "llm.timeout_s",
    "api_base": "llm.api_base",
    "base_url": "llm.api_base",
}


def _check_llm_extra(cfg: RootConfig) -> None:
    configs = [("topics.llm", cfg.topics.llm), ("propose.llm", cfg.propose.llm),
               ("generator.llm", cfg.generator.llm), ("teacher.llm", cfg.teacher.llm)]  # fmt: skip
    configs += [(f"eval.models[{m.name}].policy.llm", m.policy.llm) for m in cfg.eval.models]
    for path, llm in configs:
        for option in sorted(set(llm.extra) & CLIENT_OWNED_OPTIONS.keys()):
            owner = CLIENT_OWNED_OPTIONS[option]
            hint = f"set {path}{owner.removeprefix('llm')} instead" if owner else "the client sets it"
            raise ConfigError(f"{path}.extra.{option} is not allowed: {hint}")


def validate(cfg: RootConfig) -> RootConfig:
    """Check cross-field rules the type system cannot. Raises ``ConfigError`` naming the key."""
    _check_llm_extra(cfg)
    for key, (path, valid) in CHOICES.items():
        value = _get(cfg, path)
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(valid)}")
    for m in cfg.eval.models:
        if m.policy.kind not in CHOICES["teacher.kind"][1]:
            raise ConfigError(
                f"eval.models[{m.name}].policy.kind={m.policy.kind!r}; "
                f"choose one of {list(CHOICES['teacher.kind'][1])}"
            )
    fractions = {
        "split.heldout_fraction": cfg.split.heldout_fraction,
        "curate.task_fraction": cfg.curate.task_fraction,
        "generator.valid_fraction": cfg.generator.valid_fraction,
        "generator.test_fraction": cfg.generator.test_fraction,
        "generator.public_fraction": cfg.generator.public_fraction,
    }
    for key, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}={value} must be between 0 and 1")
    gen = cfg.generator
    if gen.test_fraction + gen.valid_fraction >= 1.0:
        raise ConfigError(
            f"generator.test_fraction={gen.test_fraction} + generator.valid_fraction={gen.valid_fraction} "
            "must be below 1 (the rest of each table is the training split)"
        )

    def runs(stage: str) -> bool:  # empty ``stages`` = every registered stage
        return not cfg.stages or stage in cfg.stages

    heldout = cfg.split.heldout_fraction
    training = [s for s in ("rollout", "curate", "sft") if runs(s)]
    if heldout >= 1.0 and training:
        raise ConfigError(
            f"split.heldout_fraction={heldout} holds out every task, leaving none for the {training} "
            "stage(s); choose a value below 1"
        )
    if heldout <= 0.0 and cfg.eval.suite == "library" and runs("evaluate"):
        raise ConfigError(
            f"split.heldout_fraction={heldout} holds out no task, but eval.suite=library evaluates the "
            "held-out tasks; raise split.heldout_fraction or set eval.suite=mlgym"
        )
    positive = {
        "topics.n": cfg.topics.n,
        "rollout.per_task": cfg.rollout.per_task,
        "rollout.concurrency": cfg.rollout.concurrency,
        "agent.max_steps": cfg.agent.max_steps,
        "eval.runs_per_task": cfg.eval.runs_per_task,
        "sft.max_length": cfg.sft.max_length,
        "validate.max_rounds": cfg.validate.max_rounds,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    if cfg.rollout.step_turns < 0:
        raise ConfigError(f"rollout.step_turns={cfg.rollout.step_turns} must be 0 (two per CPU core) or more")
    if cfg.curate.examples == "step" and not cfg.sft.assistant_only_loss and runs("sft"):
        raise ConfigError(
            "curate.examples=step makes one example per response with only that response trained, "
            "but sft.assistant_only_loss=false trains every token (the whole history before it); "
            "set sft.assistant_only_loss=true or curate.examples=trajectory"
        )
    if cfg.sft.distributed != "none" and cfg.sft.launcher != "accelerate":
        raise ConfigError(
            f"sft.distributed={cfg.sft.distributed!r} needs sft.launcher=accelerate "
            "(multi-GPU training runs as an `accelerate launch` subprocess)"
        )
    return cfg


def to_root_config(dict_cfg: Any) -> RootConfig:
    """Convert a composed DictConfig into a validated ``RootConfig`` (raises ``ConfigError``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        obj = OmegaConf.to_object(dict_cfg)
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config at key '{e.full_key}': {e.msg}") from e
    if not isinstance(obj, RootConfig):
        raise ConfigError("the composed config is not a RootConfig (is conf/config.yaml using root_schema?)")
    return validate(obj)
