"""ColQwen2 through transformers with a tiny randomly initialised model of the real architecture.

The model and its processor (a word-level tokenizer with Qwen2-VL's special tokens, the PIL Qwen2-VL
image processor) are built from configs here, saved to a directory, and loaded back through the
embedder's real loading path (``from_pretrained(..., local_files_only=True)``). Model-building tests are
marked slow: importing transformers and building the model takes tens of seconds on 2 shared cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from polymodal.backends.colpali import ColVisionEmbedder, hierarchical_pool  # noqa: E402
from polymodal.errors import ConfigError  # noqa: E402
from polymodal.media.document import Page  # noqa: E402
from polymodal.media.image import Image  # noqa: E402

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
]
WORDS = [
    "[UNK]",
    "Query",
    ":",
    "user",
    "Describe",
    "the",
    "image",
    ".",
    "what",
    "is",
    "a",
    "volcano",
    "bread",
]


def build_tiny_colqwen2(directory: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        ColQwen2Config,
        ColQwen2ForRetrieval,
        ColQwen2Processor,
        PreTrainedTokenizerFast,
        Qwen2VLConfig,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {token: i for i, token in enumerate(WORDS + SPECIALS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS,
    )
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    processor = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    vlm = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = ColQwen2ForRetrieval(ColQwen2Config(vlm_config=vlm, embedding_dim=16)).eval()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(2)
    return build_tiny_colqwen2(tmp_path_factory.mktemp("colqwen2") / "tiny-colqwen2")


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> ColVisionEmbedder:
    return ColVisionEmbedder(model_dir, family="colqwen2", batch_size=2)


def _page(seed: int, size: tuple[int, int] = (110, 150)) -> Page:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    from PIL import Image as PILImage

    return Page(image=Image.from_pil(PILImage.fromarray(pixels)), number=seed + 1, source="test.pdf")


@pytest.mark.slow
def test_loads_from_directory_with_its_config(embedder: ColVisionEmbedder) -> None:
    assert embedder.id == "colqwen2:tiny-colqwen2"
    assert embedder.dim == 16
    assert embedder.model.dtype == torch.float32  # "auto" on CPU


@pytest.mark.slow
def test_pages_become_normalised_token_matrices(embedder: ColVisionEmbedder) -> None:
    pages = [_page(0), _page(1), _page(2, size=(90, 90))]
    matrices = embedder.embed_pages(pages)
    assert len(matrices) == 3
    for matrix in matrices:
        assert matrix.dtype == np.float32 and matrix.ndim == 2 and matrix.shape[1] == 16
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    # prompt tokens + the image's merged patches (a 112x154-ish page -> more patches than a 90x90 one)
    assert matrices[0].shape[0] > matrices[2].shape[0] > 5
    # batching does not change a page's vectors
    alone = embedder.embed_pages([pages[1]])[0]
    np.testing.assert_allclose(alone, matrices[1], atol=1e-4)


@pytest.mark.slow
def test_queries_mirror_pages(embedder: ColVisionEmbedder) -> None:
    queries = embedder.embed_queries(["what is a volcano", "bread", "volcano"])
    assert [q.shape[1] for q in queries] == [16, 16, 16]
    assert queries[0].shape[0] > queries[1].shape[0]  # more words, more vectors
    for matrix in queries:
        np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    # MaxSim between a query and pages is well defined on both sides of the API
    page = embedder.embed_pages([_page(3)])[0]
    score = float(np.sum(np.max(queries[0] @ page.T, axis=1)))
    assert -queries[0].shape[0] <= score <= queries[0].shape[0]


@pytest.mark.slow
def test_token_pooling_reduces_vectors(model_dir: Path, embedder: ColVisionEmbedder) -> None:
    pooled_embedder = ColVisionEmbedder(model_dir, family="colqwen2", pool_factor=3)
    full = embedder.embed_pages([_page(4)])[0]
    pooled = pooled_embedder.embed_pages([_page(4)])[0]
    assert pooled.shape[0] == pytest.approx(full.shape[0] // 3, abs=1)
    assert pooled.shape[0] < full.shape[0]
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)


def test_hierarchical_pool_merges_near_duplicates() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 8)).astype(np.float32)
    vectors = np.repeat(centres, 3, axis=0) + 1e-3 * rng.standard_normal((12, 8)).astype(np.float32)
    pooled = hierarchical_pool(vectors, pool_factor=3)
    assert pooled.shape == (4, 8)
    expected = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    similarity = pooled @ expected.T
    assert np.all(similarity.max(axis=1) > 0.999)
    assert hierarchical_pool(vectors, 1).shape == (12, 8)


@pytest.mark.slow
def test_bfloat16_weights_still_return_float32(model_dir: Path) -> None:
    half = ColVisionEmbedder(model_dir, family="colqwen2", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    (matrix,) = half.embed_pages([_page(5)])
    assert matrix.dtype == np.float32 and matrix.shape[1] == 16


@pytest.mark.slow
def test_similarity_map_covers_the_patch_grid(embedder: ColVisionEmbedder, tmp_path: Path) -> None:
    page = _page(6)
    similarity = embedder.similarity_map("what is a volcano", page)
    n_query = embedder.embed_queries(["what is a volcano"])[0].shape[0]
    assert similarity.scores.shape[0] == n_query == len(similarity.tokens)
    rows, cols = similarity.scores.shape[1:]
    assert rows * cols > 1 and similarity.heat.shape == (rows, cols)
    assert np.all(np.abs(similarity.scores) <= 1.0 + 1e-5)  # cosine similarities of unit vectors

    from polymodal.pipelines._retrieval_explain import heatmap_overlay

    overlay = heatmap_overlay(page.image.to_pil(), similarity.heat)
    assert overlay.size == page.image.size and overlay.mode == "RGB"


@pytest.mark.slow
def test_missing_model_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ColVisionEmbedder(tmp_path / "nope", family="colqwen2")
    with pytest.raises(ConfigError, match="unknown ColPali family"):
        ColVisionEmbedder(tmp_path, family="colbert")
