from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch
from PIL import Image as PILImage

from polymodal.backends.embedding import DenseEmbedder
from polymodal.backends.registry import parse_model_id
from polymodal.backends.siglip import TransformersDenseEmbedder, create_embedder
from polymodal.errors import ConfigError, InputError
from polymodal.media.image import Image
from tests.backends.tiny_clip import tiny_checkpoint

pytestmark = pytest.mark.slow
torch.set_num_threads(2)


def _images() -> list[Image]:
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (30, 90), (64, 64), (300, 20), (33, 47)]  # odd and extreme aspect ratios too
    return [
        Image.from_pil(PILImage.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)), name=f"im{i}")
        for i, (w, h) in enumerate(sizes)
    ]


@pytest.fixture(scope="module", params=["siglip", "siglip2", "clip"])
def embedder(request: pytest.FixtureRequest) -> TransformersDenseEmbedder:
    return TransformersDenseEmbedder(tiny_checkpoint(request.param), batch_size=2)


def test_shapes_dims_and_normalisation(embedder: TransformersDenseEmbedder) -> None:
    assert isinstance(embedder, DenseEmbedder)
    assert embedder.normalized
    images = embedder.embed_images(_images())
    texts = embedder.embed_texts(
        ["a photo of a cat", "猫の写真", "une photo d'un chat", "ein Foto eines Hundes", ""]
    )
    expected_dim = 24 if embedder.model_type == "clip" else 32
    assert embedder.dim == expected_dim
    assert images.shape == (5, expected_dim) and texts.shape == (5, expected_dim)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_images([]).shape == (0, expected_dim)


def test_rows_align_with_inputs_across_batches(embedder: TransformersDenseEmbedder) -> None:
    """Batching (size 2 here) must not reorder or mix rows: each row equals that item embedded alone."""
    images = _images()
    together = embedder.embed_images(images)
    for i, image in enumerate(images):
        np.testing.assert_allclose(together[i], embedder.embed_images([image])[0], atol=1e-5)
    texts = ["a red bicycle in the snow", "fotografía de un perro", "a photo of a dog"]
    together = embedder.embed_texts(texts)
    for i, text in enumerate(texts):
        np.testing.assert_allclose(together[i], embedder.embed_texts([text])[0], atol=1e-5)
    assert not np.allclose(together[0], together[1])  # different texts, different vectors


def test_matches_the_model_called_directly(embedder: TransformersDenseEmbedder) -> None:
    """The API's rows are the model's own image/text features (same space the logits are computed in)."""
    import transformers

    model = transformers.AutoModel.from_pretrained(tiny_checkpoint(embedder.model_type)).eval()
    processor = transformers.AutoProcessor.from_pretrained(
        tiny_checkpoint(embedder.model_type), backend="pil"
    )
    pil = [im.to_pil() for im in _images()[:2]]
    with torch.inference_mode():
        pixels = processor.image_processor(pil, return_tensors="pt")
        direct = model.get_image_features(**pixels).pooler_output
        padding = True if embedder.model_type == "clip" else "max_length"
        tokens = processor.tokenizer(
            ["a photo of a cat"], padding=padding, truncation=True, max_length=16, return_tensors="pt"
        )
        args = {"input_ids": tokens["input_ids"]}
        if embedder.model_type == "clip":
            args["attention_mask"] = tokens["attention_mask"]
        text = model.get_text_features(**args).pooler_output
    direct = torch.nn.functional.normalize(direct, dim=-1).numpy()
    text = torch.nn.functional.normalize(text, dim=-1).numpy()
    np.testing.assert_allclose(embedder.embed_images(_images()[:2]), direct, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_texts(["a photo of a cat"]), text, atol=1e-5)


def test_probabilities_follow_the_family(embedder: TransformersDenseEmbedder) -> None:
    scores = np.array([[0.2, -0.1, 0.05]], dtype=np.float32)
    probs = embedder.similarity_to_probability(scores)
    if embedder.model_type == "clip":
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)  # softmax over labels
    else:
        expected = 1 / (
            1 + np.exp(-(scores * embedder.logit_scale + embedder.logit_bias))
        )  # independent sigmoids
        np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert np.argmax(probs) == 0


def test_naflex_patch_budget_is_respected() -> None:
    embedder = TransformersDenseEmbedder(tiny_checkpoint("siglip2"), max_num_patches=4)
    assert embedder.embed_images(_images()[:2]).shape == (2, 32)


def test_bfloat16_gives_float32_rows_close_to_float32() -> None:
    full = TransformersDenseEmbedder(tiny_checkpoint("siglip"))
    half = TransformersDenseEmbedder(tiny_checkpoint("siglip"), precision="bfloat16")
    a, b = full.embed_texts(["a photo of a dog"]), half.embed_texts(["a photo of a dog"])
    assert b.dtype == np.float32
    assert float(a[0] @ b[0]) > 0.97


def test_model_id_and_registry_factory(tmp_path: Path) -> None:
    path = tiny_checkpoint("clip")
    embedder = create_embedder(parse_model_id(f"clip:{path}"))
    assert embedder.id == f"clip:{path.resolve()}"
    assert create_embedder(parse_model_id(f"siglip:{path}")).id == embedder.id  # the checkpoint decides
    with pytest.raises(ConfigError, match=r"config\.json missing"):
        TransformersDenseEmbedder(tmp_path / "nowhere")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="holds a 'bert' model"):
        TransformersDenseEmbedder(tmp_path / "bert")
    with pytest.raises(ConfigError, match="precision"):
        TransformersDenseEmbedder(path, precision="float16")  # type: ignore[arg-type]


def test_bad_image_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    good = PILImage.new("RGB", (64, 64), (10, 200, 30))
    good.save(broken)
    broken.write_bytes(broken.read_bytes()[:60])  # header intact, pixels cut off
    embedder = TransformersDenseEmbedder(tiny_checkpoint("siglip"))
    with pytest.raises(InputError, match=r"broken\.png"):
        embedder.embed_images([Image.from_path(broken)])


def test_huge_panorama_is_downscaled_before_the_processor() -> None:
    wide = Image.from_pil(PILImage.new("RGB", (6000, 800), (120, 40, 200)), name="panorama")
    embedder = TransformersDenseEmbedder(tiny_checkpoint("siglip2"))
    assert embedder.embed_images([wide]).shape == (1, 32)
