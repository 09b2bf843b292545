"""Shared test configuration: the fake provider servers' fixtures are available to every test."""

from tests.fakes.fixtures import anthropic_fake, fake_provider, gemini_fake, ollama_fake, openai_fake

__all__ = ["anthropic_fake", "fake_provider", "gemini_fake", "ollama_fake", "openai_fake"]
