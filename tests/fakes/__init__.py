"""Fakes of external services, served for real on 127.0.0.1.

``openai_server`` (module ``tests.fakes.openai_server``): a scripted OpenAI-compatible chat server
and the pytest fixture of the same name.
"""

from tests.fakes.openai_server import (
    FakeOpenAIServer,
    RecordedRequest,
    Reply,
    context_length_error,
    echo_responder,
)

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply", "context_length_error", "echo_responder"]
