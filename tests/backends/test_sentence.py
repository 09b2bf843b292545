"""The offline MiniLM page embedders: text layer vs OCR, windows, token vs dense vectors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from polymodal.backends.embedding import MultiVectorEmbedder
from polymodal.backends.sentence import (
    MiniLMDenseEmbedder,
    MiniLMTokenEmbedder,
    TextPageEmbedder,
    rapidocr_text,
)
from polymodal.media.document import Page
from polymodal.media.image import Image

BLANK = Image.from_pil(PILImage.new("RGB", (64, 64), "white"), name="blank.png")


def _page(text: str | None, number: int = 1) -> Page:
    return Page(image=BLANK, number=number, source="doc.pdf", text=text)


def test_text_layer_is_used_and_ocr_only_for_pages_without_one() -> None:
    calls: list[str] = []

    def fake_ocr(image: Image) -> str:
        calls.append(image.name)
        return "text read from pixels"

    embedder = MiniLMDenseEmbedder(ocr=fake_ocr)
    texts = embedder.page_texts([_page("A real text layer with plenty of words."), _page(None), _page(" 3 ")])
    assert texts == [
        "A real text layer with plenty of words.",
        "text read from pixels",
        "text read from pixels",
    ]
    assert calls == ["blank.png", "blank.png"]
    assert MiniLMDenseEmbedder(ocr=None).page_texts([_page(None)]) == [""]


def test_both_embedders_satisfy_the_protocols() -> None:
    for embedder in (MiniLMDenseEmbedder(), MiniLMTokenEmbedder()):
        assert isinstance(embedder, MultiVectorEmbedder) and isinstance(embedder, TextPageEmbedder)
        assert embedder.dim == 384
    assert MiniLMDenseEmbedder().id != MiniLMTokenEmbedder().id


@pytest.fixture(scope="module")
def token_embedder() -> MiniLMTokenEmbedder:
    import torch

    torch.set_num_threads(2)
    return MiniLMTokenEmbedder(ocr=None)


@pytest.mark.slow
def test_token_vectors_are_normalised_and_skip_special_tokens(token_embedder: MiniLMTokenEmbedder) -> None:
    (query,) = token_embedder.embed_queries(["volcanic eruption"])
    words = token_embedder.model.tokenizer.tokenize("volcanic eruption")
    assert query.shape == (len(words), 384)
    np.testing.assert_allclose(np.linalg.norm(query, axis=1), 1.0, atol=1e-5)
    # long pages are windowed, not truncated: 3x the text gives ~3x the vectors
    sentence = "The magma chamber lies several kilometres below the summit of the volcano. "
    short, long = token_embedder.embed_page_texts([sentence * 20, sentence * 60])
    assert long.shape[0] > 2.5 * short.shape[0] and short.shape[0] >= 240


@pytest.mark.slow
def test_dense_windows_rank_the_matching_page_first(token_embedder: MiniLMTokenEmbedder) -> None:
    dense = MiniLMDenseEmbedder(ocr=None)
    pages = dense.embed_page_texts(
        ["Sourdough bread rises with wild yeast." * 3, "Jupiter has a great red storm." * 80, ""]
    )
    assert pages[0].shape == (1, 384) and pages[1].shape[0] >= 3 and pages[2].shape == (1, 384)
    (query,) = dense.embed_queries(["which planet has a giant storm"])
    assert query.shape == (1, 384)
    scores = [float(np.max(page @ query[0])) for page in pages]
    assert int(np.argmax(scores)) == 1


@pytest.mark.slow
def test_rapidocr_reads_a_real_scanned_page() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    scan = Image.from_pil(PILImage.fromarray(skimage_data.page()).convert("RGB"), name="page.png")
    text = rapidocr_text(scan).lower()
    assert "region" in text or "background" in text
