"""Model ids -> adapters.

A model id is ``PROVIDER:MODEL`` with an optional endpoint, ``PROVIDER:MODEL@BASE_URL``::

    openai:gpt-5
    anthropic:claude-sonnet-4-5
    gemini:gemini-2.5-flash
    ollama:qwen2.5vl:7b                                   (the model name may itself contain ':')
    vllm:Qwen/Qwen2.5-VL-7B-Instruct@http://gpu-box:8000/v1
    openai-compat:my-model@https://llm.internal/v1
    transformers:/models/Qwen2.5-VL-3B-Instruct
    offline:smollm2                                       (the no-key, no-network default)

Adapters are imported lazily, only when asked for. Third-party packages add providers through the
``polymodal.chat_models`` entry point group: the entry point's name is the provider, its object a factory
``(ModelSpec, Settings) -> ChatModel``. Built-ins are registered the same way, in the table below.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from polymodal.errors import ConfigError

if TYPE_CHECKING:
    from polymodal.backends.base import ChatModel
    from polymodal.config import Settings


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model id."""

    provider: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        suffix = f"@{self.base_url}" if self.base_url else ""
        return f"{self.provider}:{self.model}{suffix}"


Factory = Callable[["ModelSpec", "Settings"], "ChatModel"]

#: provider name -> "module:factory" of the built-in adapters (imported on first use).
BUILTIN_CHAT_PROVIDERS: dict[str, str] = {
    "openai": "polymodal.backends.openai_compat:create",
    "openai-compat": "polymodal.backends.openai_compat:create",
    "vllm": "polymodal.backends.openai_compat:create",
    "lmstudio": "polymodal.backends.openai_compat:create",
    "openrouter": "polymodal.backends.openai_compat:create",
    "together": "polymodal.backends.openai_compat:create",
    "mistral": "polymodal.backends.openai_compat:create",
    "anthropic": "polymodal.backends.anthropic:create",
    "gemini": "polymodal.backends.gemini:create",
    "ollama": "polymodal.backends.ollama:create",
    "transformers": "polymodal.backends.transformers_vlm:create",
    "offline": "polymodal.backends.offline:create",
    "fake": "polymodal.backends.testing:create",
}

ENTRY_POINT_GROUP = "polymodal.chat_models"


def parse_model_id(model_id: str) -> ModelSpec:
    """Split ``PROVIDER:MODEL[@BASE_URL]``; raise ConfigError with the expected shape when malformed."""
    text = model_id.strip()
    provider, sep, rest = text.partition(":")
    if not sep or not provider or not rest:
        raise ConfigError(
            f"model id {model_id!r} is not of the form PROVIDER:MODEL",
            hint="e.g. openai:gpt-5, ollama:qwen2.5vl:7b, vllm:MODEL@http://host:8000/v1, offline:smollm2",
        )
    base_url = None
    for scheme in ("@https://", "@http://"):
        cut = rest.rfind(scheme)
        if cut != -1:
            rest, base_url = rest[:cut], rest[cut + 1 :].rstrip("/")
            break
    if not rest:
        raise ConfigError(f"model id {model_id!r} names no model before the endpoint")
    return ModelSpec(provider.lower(), rest, base_url)


@lru_cache(maxsize=1)
def _plugin_providers() -> dict[str, str]:
    """Providers installed packages declare (scanned once per process)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _providers() -> dict[str, str | Callable[..., object]]:
    table: dict[str, str | Callable[..., object]] = dict(BUILTIN_CHAT_PROVIDERS)
    for name, target in _plugin_providers().items():
        table.setdefault(name, target)
    return table


#: provider -> the pip extra that installs what its adapter imports.
EXTRA_FOR_PROVIDER = {
    "anthropic": "anthropic",
    "gemini": "gemini",
    "transformers": "local",
    "offline": "offline",
}


def _resolve(provider: str, target: str | Callable[..., object]) -> Callable[..., object]:
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRA_FOR_PROVIDER.get(provider, "openai")
        raise ConfigError(
            f"the {provider!r} adapter needs a package that is not installed ({exc.name})",
            hint=f"pip install 'polymodal[{extra}]'",
        ) from exc
    factory: Callable[..., object] = getattr(module, attr)
    return factory


def available_providers() -> list[str]:
    """Names of every provider that can be asked for (built-in and plugins)."""
    return sorted(_providers())


def load_chat_model(model_id: str, settings: Settings | None = None) -> ChatModel:
    """Create the chat backend a model id names (did-you-mean on an unknown provider)."""
    from polymodal.config import get_settings

    spec = parse_model_id(model_id)
    table = _providers()
    if spec.provider not in table:
        close = difflib.get_close_matches(spec.provider, list(table), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(table))}"
        raise ConfigError(f"unknown provider {spec.provider!r} in model id {model_id!r}", hint=hint)
    factory = _resolve(spec.provider, table[spec.provider])
    model = factory(spec, settings or get_settings())
    return model  # type: ignore[return-value]


__all__ = [
    "BUILTIN_CHAT_PROVIDERS",
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "available_providers",
    "load_chat_model",
    "parse_model_id",
]
