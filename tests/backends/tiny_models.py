"""A tiny byte-level BPE tokenizer and a tiny random Idefics3 built in memory for tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
            "<global-img>"]  # fmt: skip
CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
IMAGE_SEQ_LEN = 4  # (image_size 32 / patch 8)^2 / scale_factor^2


CORPUS = ['{"vendor": "ACME", "total": 12.5, "paid": true, "currency": null}', "Extract the receipt."]


def byte_level_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """Every byte is a token (so any JSON can be written), ~400 merges, Idefics3's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
    )


def build_tiny_idefics3(path: Path) -> Path:
    """A randomly initialised Idefics3 (SmolVLM's architecture): 2 text layers, 1 vision layer, 32 wide.

    Qwen2-VL's processor cannot be built without torchvision under transformers 5 (its video processor's
    class lookup fails), so the architecture under test is Idefics3, whose processor needs none.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    torch.manual_seed(0)
    tokenizer = byte_level_tokenizer(CHAT_TEMPLATE)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIALS}
    config = Idefics3Config(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "eos_token_id": ids["<end_of_utterance>"],
            "bos_token_id": ids["<|im_start|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        scale_factor=2,
        image_token_id=ids["<image>"],
    )
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<end_of_utterance>"]
    model.save_pretrained(path)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32}
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )  # fmt: skip
    processor.save_pretrained(path)
    return path
