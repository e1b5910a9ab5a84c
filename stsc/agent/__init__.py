"""The agent room: an MLGym-compatible agent-computer interface and episode loop.

- ``task``: what an episode reads from a task folder;
- ``tools``/``aci``/``editor``/``guards``/``scoring``: the interface that runs inside a sandbox;
- ``parser``/``history``: response format and what the model sees of the chat;
- ``episode``: the loop and ``run_episode``; ``trajectory``: the run folder;
- ``policies``: who acts (an LLM, rule-based researchers, a local Hugging Face model).

Importing this package is cheap: litellm, torch and transformers load only when a policy needs them.
"""

from stsc.agent.episode import Episode, run_episode
from stsc.agent.policies import Policy, PolicyReply, make_policy
from stsc.agent.trajectory import EpisodeResult, run_folder_name

__all__ = [
    "Episode",
    "EpisodeResult",
    "Policy",
    "PolicyReply",
    "make_policy",
    "run_episode",
    "run_folder_name",
]
