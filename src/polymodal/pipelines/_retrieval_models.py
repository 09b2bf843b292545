"""Retrieval model ids -> page embedders, in one table.

======================  ==========================================================  ========================
id                      embedder                                                    ranking
======================  ==========================================================  ========================
``minilm`` (default)    MiniLM word-piece vectors of the page text (offline)        token MaxSim
``minilm-tokens``       the same (explicit name)                                    token MaxSim
``minilm-tokens+bm25``  MiniLM word-piece vectors                                   token MaxSim + BM25 (RRF)
``minilm-dense``        MiniLM vector per 256-token window                          dense MaxSim
``minilm-dense+bm25``   MiniLM vector per 256-token window                          dense MaxSim + BM25 (RRF)
``colpali:DIR``         ColPali (PaliGemma) checkpoint in transformers format       visual MaxSim
``colqwen2:DIR``        ColQwen2 checkpoint (``-hf`` transformers format)           visual MaxSim
``colqwen2.5:DIR``      ColQwen2.5 checkpoint (transformers format)                 visual MaxSim
``colmodernvbert:DIR``  ColModernVBert (successor of ColSmol)                       visual MaxSim
======================  ==========================================================  ========================

The default is the measured best on real manuals (docs/benchmarks/retrieval-quality.md): token late
interaction led nDCG@10 on the larger run, tied with tokens+BM25 overall, ahead of dense+BM25, BM25 and dense.
``DIR`` is a local model directory or a hub id already in the local cache (nothing is downloaded).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.backends.embedding import MultiVectorEmbedder
from polymodal.errors import ConfigError

DEFAULT_MODEL = "minilm"
#: Where the CLI and the pipeline functions keep an index unless told otherwise.
DEFAULT_INDEX_DIR = Path("polymodal-index")


@dataclass(frozen=True)
class RetrieverChoice:
    """What a retrieval model id means: which embedder, and whether BM25 is fused in."""

    model_id: str
    embedder: MultiVectorEmbedder
    hybrid: bool


_TEXT_MODELS: dict[str, tuple[str, bool]] = {
    # id -> (class in polymodal.backends.sentence, fuse BM25)
    "minilm": ("MiniLMTokenEmbedder", False),
    "minilm-tokens": ("MiniLMTokenEmbedder", False),
    "minilm-tokens+bm25": ("MiniLMTokenEmbedder", True),
    "minilm-dense": ("MiniLMDenseEmbedder", False),
    "minilm-dense+bm25": ("MiniLMDenseEmbedder", True),
}
_VISUAL_FAMILIES = ("colpali", "colqwen2", "colqwen2.5", "colmodernvbert")


def known_models() -> list[str]:
    """Every accepted id (visual families take ``:DIR``)."""
    return [*_TEXT_MODELS, *(f"{family}:DIR" for family in _VISUAL_FAMILIES)]


def load_retriever(model_id: str | None = None, **options: Any) -> RetrieverChoice:
    """Create the embedder a retrieval model id names; ``options`` go to the embedder (device, dtype...)."""
    model_id = (model_id or DEFAULT_MODEL).strip()
    if model_id in _TEXT_MODELS:
        from polymodal.backends import sentence

        class_name, hybrid = _TEXT_MODELS[model_id]
        embedder: MultiVectorEmbedder = getattr(sentence, class_name)(**options)
        return RetrieverChoice(model_id, embedder, hybrid)
    family, sep, location = model_id.partition(":")
    if sep and family.lower() in _VISUAL_FAMILIES and location:
        from polymodal.backends.colpali import ColVisionEmbedder

        return RetrieverChoice(model_id, ColVisionEmbedder(location, family=family.lower(), **options), False)
    close = difflib.get_close_matches(family, [*_TEXT_MODELS, *_VISUAL_FAMILIES], n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "known: " + ", ".join(known_models())
    raise ConfigError(f"unknown retrieval model {model_id!r}", hint=hint)


__all__ = ["DEFAULT_INDEX_DIR", "DEFAULT_MODEL", "RetrieverChoice", "known_models", "load_retriever"]
