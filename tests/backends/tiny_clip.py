"""Tiny randomly initialised SigLIP / SigLIP 2 (NaFlex) / CLIP checkpoints built offline for tests.

Each is the real transformers architecture with hidden sizes of 32, saved with its real (PIL-backend) image
processor and a small WordPiece tokenizer trained here on a multilingual corpus, so loading goes through the
same ``from_pretrained`` code as a downloaded checkpoint.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "a photo of a cat",
    "a photo of a dog",
    "a red bicycle in the snow",
    "une photo d'un chat",
    "ein Foto eines Hundes",
    "猫の写真",
    "fotografía de un perro",
    "this is a photo of a car",
]


def tiny_tokenizer(max_length: int = 16):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["<pad>", "<unk>", "</s>"])
    tok.train_from_iterator(CORPUS * 5, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="</s>",
        model_max_length=max_length,
    )


def save_tiny_checkpoint(directory: Path, family: str = "siglip", *, seed: int = 0) -> Path:
    """Write a tiny random ``siglip``, ``siglip2`` (NaFlex) or ``clip`` checkpoint to ``directory``."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=2,
    )
    vision = dict(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, patch_size=8
    )
    if family == "siglip":
        model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config={**vision, "image_size": 32}))
        processor = tf.SiglipProcessor(
            image_processor=tf.SiglipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
        )
    elif family == "siglip2":
        model = tf.Siglip2Model(
            tf.Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16})
        )
        processor = tf.Siglip2Processor(
            image_processor=tf.Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16), tokenizer=tokenizer
        )
    elif family == "clip":
        model = tf.CLIPModel(
            tf.CLIPConfig(text_config=text, vision_config={**vision, "image_size": 32}, projection_dim=24)
        )
        processor = tf.CLIPProcessor(
            image_processor=tf.CLIPImageProcessorPil(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            ),
            tokenizer=tokenizer,
        )
    else:
        raise ValueError(family)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


_BUILT: dict[str, Path] = {}


def tiny_checkpoint(family: str = "siglip") -> Path:
    """A tiny checkpoint of ``family``, built once per test process in a temporary directory."""
    if family not in _BUILT:
        import tempfile

        _BUILT[family] = save_tiny_checkpoint(
            Path(tempfile.mkdtemp(prefix=f"tiny-{family}-")) / family, family
        )
    return _BUILT[family]
