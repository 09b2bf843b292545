"""Token prices for cost accounting. Each figure carries its source and the date it was read.

Prices change: pass your own :class:`Price` to the pipelines (``price=``) when a figure here is stale or
missing. Local and self-hosted models cost nothing per token here (their cost is your hardware).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    source: str = ""
    as_of: str = ""

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal:
        """USD for the given token counts."""
        million = Decimal(1_000_000)
        return (self.input_per_mtok * input_tokens + self.output_per_mtok * output_tokens) / million


def _p(inp: str, out: str, source: str, as_of: str) -> Price:
    return Price(Decimal(inp), Decimal(out), source, as_of)


_OPENAI = "https://openai.com/api/pricing"
_ANTHROPIC = "https://www.anthropic.com/pricing#api"
_GEMINI = "https://ai.google.dev/gemini-api/docs/pricing"
_MISTRAL = "https://mistral.ai/pricing#api-pricing"

#: provider -> model -> price. Standard (non-batch, non-cached) rates.
PRICES: dict[str, dict[str, Price]] = {
    "openai": {
        "gpt-5": _p("1.25", "10", _OPENAI, "2025-08"),
        "gpt-5-mini": _p("0.25", "2", _OPENAI, "2025-08"),
        "gpt-5-nano": _p("0.05", "0.40", _OPENAI, "2025-08"),
        "gpt-4.1": _p("2", "8", _OPENAI, "2025-04"),
        "gpt-4.1-mini": _p("0.40", "1.60", _OPENAI, "2025-04"),
        "gpt-4o": _p("2.50", "10", _OPENAI, "2024-10"),
        "gpt-4o-mini": _p("0.15", "0.60", _OPENAI, "2024-07"),
    },
    "anthropic": {
        "claude-opus-4-1": _p("15", "75", _ANTHROPIC, "2025-08"),
        "claude-sonnet-4-5": _p("3", "15", _ANTHROPIC, "2025-09"),
        "claude-sonnet-4-0": _p("3", "15", _ANTHROPIC, "2025-05"),
        "claude-3-5-haiku-latest": _p("0.80", "4", _ANTHROPIC, "2024-11"),
    },
    "gemini": {
        "gemini-2.5-pro": _p("1.25", "10", _GEMINI, "2025-06"),
        "gemini-2.5-flash": _p("0.30", "2.50", _GEMINI, "2025-06"),
        "gemini-2.5-flash-lite": _p("0.10", "0.40", _GEMINI, "2025-07"),
    },
    "mistral": {
        "mistral-medium-latest": _p("0.40", "2", _MISTRAL, "2025-05"),
        "pixtral-large-latest": _p("2", "6", _MISTRAL, "2024-11"),
        "mistral-small-latest": _p("0.10", "0.30", _MISTRAL, "2025-03"),
    },
}

#: Providers that run on the user's own hardware: zero per-token cost.
LOCAL_PROVIDERS = frozenset(
    {"offline", "transformers", "ollama", "vllm", "lmstudio", "openai-compat", "fake"}
)

_FREE = Price(Decimal(0), Decimal(0), "local model", "")


def price_for(provider: str, model: str) -> Price | None:
    """The price of ``provider:model`` (longest known prefix of dated model names), or None when unknown."""
    if provider in LOCAL_PROVIDERS:
        return _FREE
    table = PRICES.get(provider, {})
    if model in table:
        return table[model]
    matches = [name for name in table if model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None


__all__ = ["LOCAL_PROVIDERS", "PRICES", "Price", "price_for"]
