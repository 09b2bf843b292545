"""Pytest fixtures starting one fake server per test (registered by tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FAKES, AnthropicFake, FakeProvider, GeminiFake, OllamaFake, OpenAIFake


@pytest.fixture
def openai_fake() -> Iterator[OpenAIFake]:
    """An OpenAI-compatible server; its model id is ``openai-compat:test-model@http://127.0.0.1:PORT/v1``."""
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def anthropic_fake() -> Iterator[AnthropicFake]:
    """An Anthropic Messages API server."""
    with AnthropicFake() as fake:
        yield fake


@pytest.fixture
def gemini_fake() -> Iterator[GeminiFake]:
    """A Gemini API server."""
    with GeminiFake() as fake:
        yield fake


@pytest.fixture
def ollama_fake() -> Iterator[OllamaFake]:
    """An Ollama server."""
    with OllamaFake() as fake:
        yield fake


@pytest.fixture(params=sorted(FAKES))
def fake_provider(request: pytest.FixtureRequest) -> Iterator[FakeProvider]:
    """Each provider's fake in turn (parametrized by provider family)."""
    with FAKES[request.param]() as fake:
        yield fake
