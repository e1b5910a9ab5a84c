"""The ``llm`` policy: any litellm model behind ``stsc.llm.LLMClient``."""

from __future__ import annotations

from stsc.agent.policies import PolicyReply
from stsc.llm import LLMClient


class LLMPolicy:
    """Sends the messages as they are; the client handles retries, limits, cost and caching.
    The episode seed salts the response cache so repeated episodes are sampled independently, and
    with ``llm.send_seed`` it goes to the server too (reproducible sampling on vLLM).

    litellm moves a leading ``<think>`` block of the answer into a separate reasoning field; when
    the completion carries it (``reasoning``), it is put back in front of the text so the episode
    keeps it in the thought, as for models whose reasoning stays inline."""

    def __init__(self, name: str, client: LLMClient):
        self.name = name
        self.client = client

    async def act(self, messages: list[dict[str, str]], *, seed: int) -> PolicyReply:
        sampling = {"seed": seed} if self.client.cfg.send_seed else {}
        completion = await self.client.acomplete(messages, cache_salt=f"episode-seed-{seed}", **sampling)
        reasoning = getattr(completion, "reasoning", None)
        text = f"<think>{reasoning}</think>\n{completion.text}" if reasoning else completion.text
        return PolicyReply(
            text=text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            cost_usd=completion.cost_usd,
            truncated=getattr(completion, "finish_reason", None) == "length",
        )
