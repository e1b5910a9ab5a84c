"""Domain exceptions: bad *external* input (model output, generated code, Hub responses, user config).

Our own invariants use ``assert``. Each loop (self-debug, episode, evaluation batch) maps these to a
status in exactly one place and re-raises anything it does not know.
"""


class StscError(Exception):
    """Base class of every error stsc raises on purpose."""


class ConfigError(StscError):
    """A config value is invalid; the message names the key and the valid choices."""


class StageError(StscError):
    """A stage cannot run (missing upstream artifact, unknown stage name, ...)."""


class SandboxError(StscError):
    """Infrastructure failure of a sandbox (engine gone, container died). A failing command is not one."""


class LLMError(StscError):
    """A model call failed after its retries (provider down, bad credentials, ...). ``cost_usd``:
    what its attempts were billed all the same (replies without a choice)."""

    cost_usd: float = 0.0


class BudgetExceededError(LLMError):
    """The USD budget of a stage or episode is spent; no new calls are made."""


class MissingAPIKeyError(LLMError):
    """The provider of the configured model needs an API key that is not set."""


class RequestRejectedError(LLMError):
    """The provider rejects the caller (bad credentials, no permission, unknown model, no quota
    left): no retry, of the call or of the episode, can succeed, so the stage stops."""


class ContentRefusedError(LLMError):
    """The provider refuses to answer this conversation (a content-policy refusal): the episode
    ends, and is not retried as an infrastructure failure."""


class ModelOutputError(StscError):
    """Model output does not have the expected shape (malformed JSON, no command block, ...)."""


class HubError(StscError):
    """The Hugging Face Hub (or the offline catalog) answered something unusable."""


class TaskFormatError(StscError):
    """A task folder does not satisfy the task contract (missing files, bad yaml, bad metadata)."""


class EvaluationError(StscError):
    """An evaluation script produced output that is not one JSON object with the priority metric."""


class ContextLimitError(LLMError):
    """The prompt no longer fits the model's context window."""


class DatasetNotFoundError(HubError):
    """A dataset id does not exist in the source asked (Hub 404, or not in the offline catalog)."""


class PromptError(ConfigError):
    """A prompt template is missing, malformed, or needs a variable that was not passed."""


class UnusableDatasetError(StscError):
    """A verified dataset cannot make the planned task (too few labelled rows, a constant target,
    a missing column). ``reason`` is the short drop reason recorded in the stage funnel."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class EpisodeInfraError(StscError):
    """An episode stopped because infrastructure failed (the sandbox or the model provider), not
    because of anything the agent did. Its run folder holds the partial trajectory but no
    ``stsc.json``, so running the episode again starts it afresh; ``run_dir`` names the folder."""

    def __init__(self, message: str, run_dir: str = ""):
        super().__init__(message)
        self.run_dir = run_dir


class UnusableTrajectoryError(StscError):
    """A run folder cannot become an SFT example (unfinished, unreadable, or rejected by a curation
    filter). ``reason`` is the drop reason recorded in the curate funnel."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason


class SandboxPathError(StscError):
    """A sandbox ``put``/``get`` path the sandbox user cannot use (missing, unreadable, read-only,
    outside what the sandbox shows). The caller's mistake, not an infrastructure failure."""
