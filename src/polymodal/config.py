"""Settings: the only module that reads the environment.

Everything else receives a :class:`Settings` (or the values it needs) explicitly. Values come from keyword
arguments, then ``POLYMODAL_*`` environment variables (and the providers' usual key variables such as
``OPENAI_API_KEY``), then a ``.env`` file, then the defaults below.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from polymodal.media.limits import Limits


def _key(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class RetrySettings(BaseSettings):
    """The one retry layer: exponential backoff with full jitter, bounded attempts, honours Retry-After."""

    model_config = SettingsConfigDict(env_prefix="POLYMODAL_RETRY_", extra="ignore")

    max_attempts: int = Field(4, ge=1, le=20, description="Total attempts per call, the first included.")
    base_delay: float = Field(0.5, ge=0, description="First backoff in seconds; doubles each attempt.")
    max_delay: float = Field(30.0, ge=0, description="Cap on one backoff and on an honoured Retry-After.")
    total_timeout: float = Field(300.0, gt=0, description="Give up once this much time has passed.")


class Settings(BaseSettings):
    """Model ids, keys, endpoints, limits and paths for polymodal."""

    model_config = SettingsConfigDict(
        env_prefix="POLYMODAL_", env_file=".env", extra="ignore", populate_by_name=True
    )

    default_model: str = Field("offline:smollm2", description="Model id used when none is given.")
    request_timeout: float = Field(120.0, gt=0, description="Seconds allowed for one model request.")
    cache_dir: Path = Field(Path.home() / ".cache" / "polymodal", description="Converted local models.")
    max_pages: int = Field(500, ge=1)
    max_pixels: int = Field(80_000_000, ge=1)
    max_bytes: int = Field(200 * 1024 * 1024, ge=1)
    render_seconds: float = Field(120.0, gt=0)

    openai_api_key: SecretStr | None = Field(None, validation_alias=_key("OPENAI_API_KEY", "openai_api_key"))
    openai_base_url: str | None = Field(None, validation_alias=_key("OPENAI_BASE_URL", "openai_base_url"))
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=_key("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        None, validation_alias=_key("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    gemini_api_key: SecretStr | None = Field(
        None, validation_alias=_key("GEMINI_API_KEY", "GOOGLE_API_KEY", "gemini_api_key")
    )
    gemini_base_url: str | None = Field(None, validation_alias=_key("GEMINI_BASE_URL", "gemini_base_url"))
    mistral_api_key: SecretStr | None = Field(
        None, validation_alias=_key("MISTRAL_API_KEY", "mistral_api_key")
    )
    openrouter_api_key: SecretStr | None = Field(
        None, validation_alias=_key("OPENROUTER_API_KEY", "openrouter_api_key")
    )
    together_api_key: SecretStr | None = Field(
        None, validation_alias=_key("TOGETHER_API_KEY", "together_api_key")
    )
    deepgram_api_key: SecretStr | None = Field(
        None, validation_alias=_key("DEEPGRAM_API_KEY", "deepgram_api_key")
    )
    deepgram_url: str = Field("wss://api.deepgram.com", description="Deepgram streaming API origin.")
    elevenlabs_api_key: SecretStr | None = Field(
        None, validation_alias=_key("ELEVENLABS_API_KEY", "elevenlabs_api_key")
    )
    elevenlabs_url: str = Field("wss://api.elevenlabs.io", description="ElevenLabs streaming API origin.")
    openai_compat_api_key: SecretStr | None = Field(
        None, description="Key for self-hosted OpenAI-compatible servers (vLLM --api-key, LM Studio...)."
    )
    ollama_host: str = Field("http://localhost:11434", validation_alias=_key("OLLAMA_HOST", "ollama_host"))
    vllm_base_url: str = Field("http://localhost:8000/v1")
    lmstudio_base_url: str = Field("http://localhost:1234/v1")

    retry: RetrySettings = Field(default_factory=RetrySettings)

    server_api_keys: list[SecretStr] = Field(
        default_factory=list, description="Keys accepted by `polymodal serve` (Bearer); empty = no auth."
    )
    server_max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Largest upload the service takes."
    )

    def limits(self) -> Limits:
        """The media limits these settings describe."""
        return Limits(
            max_bytes=self.max_bytes,
            max_pixels=self.max_pixels,
            max_pages=self.max_pages,
            render_seconds=self.render_seconds,
        )

    def secret(self, name: str) -> str | None:
        """The plain value of a key setting such as ``"openai_api_key"``, or None when unset."""
        value = getattr(self, name)
        return value.get_secret_value() if isinstance(value, SecretStr) else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once from the environment (call ``get_settings.cache_clear()`` after changing it)."""
    return Settings()


__all__ = ["RetrySettings", "Settings", "get_settings"]
