"""Local vision-language models through transformers (Qwen2.5-VL, Qwen2-VL, SmolVLM, Idefics3...).

``transformers:/models/Qwen2.5-VL-3B-Instruct`` loads ``AutoProcessor`` + ``AutoModelForImageTextToText`` from
a local directory (or a hub id already in the local cache: nothing is downloaded unless ``allow_download``
is set). With a schema, decoding is constrained by a grammar (:mod:`~polymodal.backends.constrained`), so
the answer is JSON that satisfies it. Model calls run in a worker thread, one at a time per loaded model;
streaming goes through ``TextIteratorStreamer`` and stops the model when the consumer stops reading.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

from polymodal.backends._local_generation import LoadedModel, LocalChatModel
from polymodal.backends.base import (
    Capabilities,
)
from polymodal.backends.constrained import ConstraintError
from polymodal.backends.messages import ImagePart, Message, TextPart
from polymodal.backends.registry import ModelSpec
from polymodal.config import Settings
from polymodal.errors import BackendError, ErrorCategory, PolymodalError

PROVIDER = "transformers"
Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "bfloat16", "float32"]

_load_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], LoadedModel] = {}


def _resolve_device(device: Device) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _resolve_dtype(dtype: DType, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def max_image_pixels(processor: Any) -> int | None:
    """The largest image (in pixels) the processor feeds the vision tower without shrinking it, when known."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None:
        return None
    value = getattr(image_processor, "max_pixels", None)
    if isinstance(value, int):
        return value
    size = getattr(image_processor, "size", None) or {}
    if not isinstance(size, dict):
        size = {key: getattr(size, key, None) for key in ("max_pixels", "longest_edge")}
    if isinstance(size.get("max_pixels"), int):
        return int(size["max_pixels"])
    longest = size.get("longest_edge")
    if isinstance(longest, int):
        # Qwen2-VL-style processors (they merge patches) keep a pixel count under "longest_edge".
        return longest if hasattr(image_processor, "merge_size") else longest * longest
    return None


def to_chat(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Chat-template conversation with image placeholders, and the PIL images in the order they appear."""
    conversation: list[dict[str, Any]] = []
    images: list[Any] = []
    for message in messages:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, ImagePart):
                if part.label:
                    content.append({"type": "text", "text": f"[{part.label}]"})
                content.append({"type": "image"})
                images.append(part.image)
            elif isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
        conversation.append({"role": message.role, "content": content})
    return conversation, images


class TransformersVLM(LocalChatModel):
    """A local transformers vision-language model with grammar-constrained JSON output."""

    provider = PROVIDER

    def __init__(
        self,
        path: str,
        *,
        device: Device = "auto",
        dtype: DType = "auto",
        allow_download: bool = False,
    ) -> None:
        super().__init__(path)
        self.path = path
        self.device = _resolve_device(device)
        self.dtype_name = dtype
        self.allow_download = allow_download
        self.capabilities = Capabilities(images=True, structured="grammar", streaming=True)

    def _load(self) -> LoadedModel:
        key = (self.path, self.device, self.dtype_name)
        with _load_lock:
            loaded = _loaded.get(key)
            if loaded is None:
                loaded = _loaded[key] = self._load_uncached()
        pixels = max_image_pixels(loaded.processor)
        if pixels != self.capabilities.max_image_pixels:
            self.capabilities = Capabilities(
                images=True, structured="grammar", streaming=True, max_image_pixels=pixels
            )
        return loaded

    def _load_uncached(self) -> LoadedModel:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        local_only = not self.allow_download
        processor = AutoProcessor.from_pretrained(self.path, local_files_only=local_only)
        model: Any = AutoModelForImageTextToText.from_pretrained(
            self.path, local_files_only=local_only, dtype=_resolve_dtype(self.dtype_name, self.device)
        )
        model.to(self.device)
        model.eval()
        tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = tuple(int(e) for e in eos) if isinstance(eos, list) else (int(eos),)
        return LoadedModel(model=model, processor=processor, tokenizer=tokenizer, eos_token_ids=eos_ids)

    def _prepare(self, messages: Sequence[Message]) -> tuple[LoadedModel, dict[str, Any]]:
        loaded = self._load()
        conversation, images = to_chat(messages)
        prompt = loaded.processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        budget = self.capabilities.max_image_pixels
        pil_images = [(img.resized_to_budget(budget) if budget else img).to_pil() for img in images]
        inputs = loaded.processor(
            text=[prompt], images=pil_images or None, return_tensors="pt", padding=False
        )
        model_dtype = loaded.model.dtype
        prepared: dict[str, Any] = {}
        for name, value in inputs.items():
            if hasattr(value, "to"):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(model_dtype)
            prepared[name] = value
        return loaded, prepared

    def _translate(self, exc: BaseException) -> PolymodalError:
        """The one place torch/transformers exceptions of this backend become polymodal errors."""
        if isinstance(exc, PolymodalError):
            return exc
        text = str(exc)
        if isinstance(exc, ConstraintError):
            category = ErrorCategory.INVALID_REQUEST
        elif isinstance(exc, MemoryError) or "out of memory" in text.lower():
            category = ErrorCategory.OVERLOADED
        elif isinstance(exc, OSError):  # missing directory, file or a checkpoint that is not in the cache
            category = ErrorCategory.NOT_FOUND
        elif isinstance(exc, (ValueError, KeyError)) and ("config" in text.lower() or "checkpoint" in text):
            category = ErrorCategory.UNAVAILABLE
        else:
            category = ErrorCategory.SERVER
        return BackendError(
            f"{type(exc).__name__}: {text}", category=category, provider=PROVIDER, model=self.model
        )

    async def aclose(self) -> None:
        """Forget this process's copy of the model (the next call loads it again)."""
        with _load_lock:
            _loaded.pop((self.path, self.device, self.dtype_name), None)


def create(spec: ModelSpec, settings: Settings) -> TransformersVLM:
    """Factory for ``transformers:<directory or cached hub id>``; loads lazily on first use."""
    return TransformersVLM(spec.model)


__all__ = ["TransformersVLM", "create", "max_image_pixels", "to_chat"]
