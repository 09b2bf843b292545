from __future__ import annotations

import pytest

from polymodal.backends.anthropic import AnthropicChatModel
from polymodal.backends.gemini import GeminiChatModel
from polymodal.backends.ollama import OllamaChatModel
from polymodal.backends.openai_compat import OpenAICompatChatModel
from polymodal.backends.registry import ModelSpec, available_providers, load_chat_model, parse_model_id
from polymodal.config import Settings
from polymodal.errors import ConfigError
from tests.fakes import FakeProvider, OpenAIFake

KEY_VARIABLES = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "OPENROUTER_API_KEY",
    "TOGETHER_API_KEY",
    "POLYMODAL_OPENAI_COMPAT_API_KEY",
]


@pytest.fixture
def keyless(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with no key from the environment or a .env file."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        ("openai:gpt-5", ModelSpec("openai", "gpt-5")),
        ("ollama:qwen2.5vl:7b", ModelSpec("ollama", "qwen2.5vl:7b")),
        ("vllm:X@http://h:8000/v1", ModelSpec("vllm", "X", "http://h:8000/v1")),
        (
            "vllm:Qwen/Qwen2.5-VL-7B-Instruct@https://gpu.example/v1/",
            ModelSpec("vllm", "Qwen/Qwen2.5-VL-7B-Instruct", "https://gpu.example/v1"),
        ),
        ("ollama:llava:13b@http://box:11434", ModelSpec("ollama", "llava:13b", "http://box:11434")),
        ("Gemini:gemini-2.5-flash", ModelSpec("gemini", "gemini-2.5-flash")),
    ],
)
def test_parse_model_id(model_id: str, expected: ModelSpec) -> None:
    assert parse_model_id(model_id) == expected


@pytest.mark.parametrize("bad", ["gpt-5", ":gpt-5", "openai:", "vllm:@http://h:8000/v1"])
def test_malformed_ids_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_model_id(bad)


def test_unknown_provider_suggests_the_close_one(keyless: Settings) -> None:
    with pytest.raises(ConfigError) as caught:
        load_chat_model("anthropik:claude", keyless)
    assert caught.value.hint is not None and "anthropic" in caught.value.hint
    assert "did you mean" in str(caught.value)


@pytest.mark.parametrize(
    ("model_id", "variable"),
    [
        ("openai:gpt-5", "OPENAI_API_KEY"),
        ("anthropic:claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ("gemini:gemini-2.5-flash", "GEMINI_API_KEY"),
        ("mistral:pixtral-large-latest", "MISTRAL_API_KEY"),
        ("openrouter:qwen/qwen2.5-vl-72b-instruct", "OPENROUTER_API_KEY"),
        ("together:meta-llama/Llama-4-Scout", "TOGETHER_API_KEY"),
    ],
)
def test_missing_key_names_the_variable(keyless: Settings, model_id: str, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_chat_model(model_id, keyless)
    assert caught.value.hint is not None and variable in caught.value.hint


def test_keyless_local_endpoints_need_no_key(keyless: Settings) -> None:
    vllm = load_chat_model("vllm:Qwen/Qwen2.5-VL-7B-Instruct", keyless)
    assert isinstance(vllm, OpenAICompatChatModel) and vllm.base_url == "http://localhost:8000/v1"
    lmstudio = load_chat_model("lmstudio:qwen2.5-vl-7b", keyless)
    assert isinstance(lmstudio, OpenAICompatChatModel) and lmstudio.base_url == "http://localhost:1234/v1"
    ollama = load_chat_model("ollama:qwen2.5vl:7b", keyless)
    assert isinstance(ollama, OllamaChatModel)
    assert (ollama.model, ollama.host) == ("qwen2.5vl:7b", "http://localhost:11434")


def test_endpoint_in_id_wins_over_settings(keyless: Settings) -> None:
    model = load_chat_model("vllm:X@http://h:8000/v1", keyless)
    assert isinstance(model, OpenAICompatChatModel) and model.base_url == "http://h:8000/v1"


def test_openai_compat_requires_an_endpoint(keyless: Settings) -> None:
    with pytest.raises(ConfigError) as caught:
        load_chat_model("openai-compat:my-model", keyless)
    assert caught.value.hint is not None and "@http" in caught.value.hint


def test_ollama_host_without_scheme(keyless: Settings) -> None:
    settings = keyless.model_copy(update={"ollama_host": "gpu-box:11434"})
    model = load_chat_model("ollama:llava", settings)
    assert isinstance(model, OllamaChatModel) and model.host == "http://gpu-box:11434"


def test_retry_settings_reach_the_adapter(keyless: Settings) -> None:
    settings = keyless.model_copy(update={"retry": keyless.retry.model_copy(update={"max_attempts": 9})})
    model = load_chat_model("vllm:X", settings)
    assert isinstance(model, OpenAICompatChatModel) and model.retry.max_attempts == 9


def test_remote_providers_are_listed() -> None:
    names = set(available_providers())
    assert {"openai", "openai-compat", "vllm", "lmstudio", "openrouter", "together", "mistral"} <= names
    assert {"anthropic", "gemini", "ollama"} <= names


@pytest.mark.parametrize(
    "provider", ["openai", "openai-compat", "vllm", "lmstudio", "openrouter", "together", "mistral"]
)
def test_every_openai_profile_loads_from_a_fake(provider: str) -> None:
    with OpenAIFake(provider=provider) as fake:
        model = load_chat_model(fake.model_id, fake.settings)
    assert isinstance(model, OpenAICompatChatModel)
    assert model.provider == provider and model.base_url == fake.base_url


def test_every_fake_resolves_to_its_adapter(fake_provider: FakeProvider) -> None:
    expected = {
        "openai-compat": OpenAICompatChatModel,
        "anthropic": AnthropicChatModel,
        "gemini": GeminiChatModel,
        "ollama": OllamaChatModel,
    }
    model = load_chat_model(fake_provider.model_id, fake_provider.settings)
    assert isinstance(model, expected[fake_provider.provider])
