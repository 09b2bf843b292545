"""Local fake provider servers speaking each provider's documented wire format.

Every fake has the same scripting interface (``reply_json``, ``reply_text``, ``truncated``, ``fail``,
``spend_limit``, ``hang``, ``malformed``, ``always``, ``requests``, ``model_id``, ``settings``), so a test can
be parametrized over providers::

    def test_extract(fake_provider):
        fake_provider.reply_json({"total": 12.5})
        model = load_chat_model(fake_provider.model_id, fake_provider.settings)
        ...
        assert len(fake_provider.requests) == 1
"""

from tests.fakes._server import (
    TEST_KEY,
    Answer,
    Failure,
    FakeProvider,
    Hang,
    Malformed,
    RecordedRequest,
    delay,
    json_reply,
    malformed,
    status,
    text_reply,
)
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.gemini_fake import GeminiFake
from tests.fakes.ollama_fake import OllamaFake
from tests.fakes.openai_fake import OpenAIFake

#: Every fake class, by provider family, for parametrized tests.
FAKES: dict[str, type[FakeProvider]] = {
    "openai": OpenAIFake,
    "anthropic": AnthropicFake,
    "gemini": GeminiFake,
    "ollama": OllamaFake,
}

__all__ = [
    "FAKES",
    "TEST_KEY",
    "Answer",
    "AnthropicFake",
    "Failure",
    "FakeProvider",
    "GeminiFake",
    "Hang",
    "Malformed",
    "OllamaFake",
    "OpenAIFake",
    "RecordedRequest",
    "delay",
    "json_reply",
    "malformed",
    "status",
    "text_reply",
]
