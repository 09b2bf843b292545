"""The transformers VLM backend on a tiny random-weight Idefics3 (SmolVLM) built in the test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from pydantic import BaseModel, Field

from polymodal.backends.base import GenerateOptions
from polymodal.backends.messages import ImagePart, Message
from polymodal.backends.registry import ModelSpec
from polymodal.backends.transformers_vlm import TransformersVLM, create, max_image_pixels, to_chat
from polymodal.config import Settings
from polymodal.errors import BackendError, ErrorCategory
from polymodal.media.image import Image
from tests.backends.tiny_models import build_tiny_idefics3

transformers = pytest.importorskip("transformers")


class Receipt(BaseModel):
    """Bounded fields, so even random weights must finish the JSON within the token budget."""

    vendor: str = Field(max_length=12)
    total: int = Field(ge=0, le=999)
    paid: bool
    currency: Literal["USD", "EUR"] | None = None


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


def _receipt_image() -> Image:
    pixels = np.full((90, 120, 3), 255, dtype=np.uint8)
    pixels[20:40, 10:110] = 0
    return Image.from_pil(PILImage.fromarray(pixels), name="receipt.png")


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir: Path) -> TransformersVLM:
    torch.set_num_threads(1)
    model = create(ModelSpec("transformers", str(tiny_vlm_dir)), Settings())
    assert isinstance(model, TransformersVLM)
    return model


@pytest.mark.slow
async def test_generate_with_image_and_schema_validates(vlm: TransformersVLM) -> None:
    messages = [Message.user(ImagePart(_receipt_image(), label="page 1"), "Extract the receipt.")]
    completion = await vlm.generate(messages, Receipt, GenerateOptions(max_tokens=200))
    assert completion.finish_reason == "stop"
    receipt = Receipt.model_validate_json(completion.text)  # random weights, valid JSON all the same
    assert set(json.loads(completion.text)) <= set(Receipt.model_fields)
    assert isinstance(receipt.paid, bool)
    assert completion.usage.input_tokens > 10
    assert completion.usage.output_tokens > 0
    assert vlm.capabilities.max_image_pixels == 32 * 32
    assert vlm.capabilities.structured == "grammar"


@pytest.mark.slow
async def test_token_limit_gives_length_not_a_crash(vlm: TransformersVLM) -> None:
    completion = await vlm.generate([Message.user("Extract.")], Receipt, GenerateOptions(max_tokens=3))
    assert completion.finish_reason == "length"
    assert completion.usage.output_tokens == 3
    assert completion.text.startswith("{")


@pytest.mark.slow
async def test_stream_yields_text_and_finish(vlm: TransformersVLM) -> None:
    deltas = [
        d async for d in vlm.stream([Message.user(_receipt_image(), "Hi")], GenerateOptions(max_tokens=6))
    ]
    assert deltas[-1].finish_reason in {"stop", "length"}
    assert deltas[-1].usage is not None and deltas[-1].usage.output_tokens >= 1


@pytest.mark.slow
async def test_stream_can_be_abandoned(vlm: TransformersVLM) -> None:
    stream = vlm.stream([Message.user("Hi")], GenerateOptions(max_tokens=400, temperature=1.0, seed=1))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    # the model lock is free again: a new call completes
    completion = await vlm.generate([Message.user("Hi")], None, GenerateOptions(max_tokens=2))
    assert completion.usage.output_tokens <= 2


def test_to_chat_keeps_image_order_and_labels() -> None:
    first, second = _receipt_image(), _receipt_image()
    conversation, images = to_chat([Message.user(ImagePart(first, label="p1"), "text", second)])
    assert images == [first, second]
    kinds = [c["type"] for c in conversation[0]["content"]]
    assert kinds == ["text", "image", "text", "image"]
    assert conversation[0]["content"][0]["text"] == "[p1]"


def test_max_image_pixels_reads_the_processor_budget() -> None:
    class QwenStyle:  # Qwen2-VL image processors merge patches and keep pixel counts in ``size``
        merge_size = 2
        size: ClassVar[dict[str, int]] = {"shortest_edge": 3136, "longest_edge": 1_003_520}

    class EdgeStyle:  # Idefics3-style: the longest edge in pixels
        size: ClassVar[dict[str, int]] = {"longest_edge": 364}

    class Holder:
        def __init__(self, image_processor: object) -> None:
            self.image_processor = image_processor

    assert max_image_pixels(Holder(QwenStyle())) == 1_003_520
    assert max_image_pixels(Holder(EdgeStyle())) == 364 * 364
    assert max_image_pixels(object()) is None


async def test_missing_directory_is_a_backend_error(tmp_path: Path) -> None:
    model = TransformersVLM(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(BackendError) as info:
        await model.generate([Message.user("hi")], None, GenerateOptions(max_tokens=2))
    assert info.value.category is ErrorCategory.NOT_FOUND
    assert info.value.is_permanent
