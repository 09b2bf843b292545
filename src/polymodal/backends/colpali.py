"""ColPali-family visual page embedders (ColPali, ColQwen2, ColQwen2.5, ColModernVBert) via transformers.

Why transformers and not ``colpali-engine``: colpali-engine 0.3.18 requires torchvision and imports it at
``import colpali_engine`` (through ``transformers.models.qwen2_vl.image_processing_qwen2_vl``); torchvision
exists here only as a CUDA build that breaks ``import transformers`` beside CPU torch. transformers ships the
same architectures (``ColPaliForRetrieval``, ``ColQwen2ForRetrieval`` -- whose ``vlm_config`` may be a
Qwen2-VL or a Qwen2.5-VL config -- and ``ColModernVBertForRetrieval``, the successor of ColSmol) with PIL
image processors, so checkpoints in the transformers format (``vidore/colpali-v1.3-hf``,
``vidore/colqwen2-v1.0-hf``...) load from a local directory or the hub cache (``local_files_only``).
ColSmol (ColIdefics3) has no transformers implementation and is not offered.

Pages are images: a page becomes the model's output vectors for its prompt + image tokens (L2-normalised),
optionally reduced by hierarchical token pooling (``pool_factor``: ~n/pool_factor clusters by Ward linkage,
each replaced by its normalised mean -- the ColPali authors report pool factor 3 keeps ~97% of nDCG with a
third of the vectors). :meth:`ColVisionEmbedder.similarity_map` gives the query-token x image-patch scores
behind ``polymodal search --explain``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.backends.embedding import FloatMatrix
from polymodal.errors import BackendError, ConfigError, ErrorCategory
from polymodal.media.document import Page


@dataclass(frozen=True)
class _Family:
    model_class: str
    processor_class: str
    #: Pixel budget the pipeline renders pages at (the processor resizes further as the model needs).
    page_max_pixels: int


FAMILIES: dict[str, _Family] = {
    "colpali": _Family("ColPaliForRetrieval", "ColPaliProcessor", 1_000_000),
    "colqwen2": _Family("ColQwen2ForRetrieval", "ColQwen2Processor", 1_000_000),
    "colqwen2.5": _Family("ColQwen2ForRetrieval", "ColQwen2Processor", 1_000_000),
    "colmodernvbert": _Family("ColModernVBertForRetrieval", "ColModernVBertProcessor", 1_000_000),
}
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class SimilarityMap:
    """Each query token's similarity to each image patch, ``scores[t, row, col]``; ``tokens[t]`` names it."""

    scores: np.ndarray
    tokens: list[str]

    @property
    def heat(self) -> np.ndarray:
        """Patch heat over the whole query: the sum over query tokens, ``(rows, cols)``."""
        return np.asarray(self.scores.sum(axis=0), dtype=np.float32)


def hierarchical_pool(vectors: np.ndarray, pool_factor: int) -> FloatMatrix:
    """Reduce ``(n, d)`` vectors to about ``n / pool_factor`` cluster means (Ward linkage), renormalised."""
    n = len(vectors)
    clusters = max(n // pool_factor, 1)
    if pool_factor <= 1 or n <= 1 or clusters >= n:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(vectors.astype(np.float64), method="ward"), t=clusters, criterion="maxclust")
    pooled = np.stack([vectors[labels == label].mean(axis=0) for label in np.unique(labels)])
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.ascontiguousarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)


class ColVisionEmbedder:
    """A ColPali-family model as a :class:`~polymodal.backends.embedding.MultiVectorEmbedder`.

    Args:
        model: local directory or hub id (must already be in the hub cache; nothing is downloaded).
        family: ``colpali``, ``colqwen2``, ``colqwen2.5`` or ``colmodernvbert``.
        device: torch device.
        dtype: ``"bfloat16"``, ``"float32"`` or ``"auto"`` (bf16 on CUDA, fp32 on CPU).
        batch_size: pages or queries per forward pass.
        pool_factor: hierarchical token pooling of page vectors (``None`` or 1 = off).
        model_object / processor_object: already-built model and processor (tests, custom loading).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        family: str = "colqwen2",
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 4,
        pool_factor: int | None = None,
        model_object: Any = None,
        processor_object: Any = None,
    ) -> None:
        if family not in FAMILIES:
            raise ConfigError(f"unknown ColPali family {family!r}", hint="one of " + ", ".join(FAMILIES))
        if dtype != "auto" and dtype not in _DTYPES:
            raise ConfigError(f"unsupported dtype {dtype!r}", hint="bfloat16, float32 or auto")
        self.family = family
        self.location = str(model)
        self.device = device
        self.dtype = _DTYPES.get(dtype, "bfloat16" if device.startswith("cuda") else "float32")
        self.batch_size = batch_size
        self.pool_factor = pool_factor
        self.page_max_pixels = FAMILIES[family].page_max_pixels
        self._model = model_object
        self._processor = processor_object
        self._lock = threading.Lock()
        name = Path(self.location).name if Path(self.location).exists() else self.location
        self.id = f"{family}:{name}"
        self.dim = int(self._config().embedding_dim)

    # -- loading ------------------------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The retrieval model, loaded on first use (local files only)."""
        with self._lock:
            if self._model is None:
                self._model, self._processor = self._load()
            return self._model

    @property
    def processor(self) -> Any:
        """The matching processor (tokenizer + image processor)."""
        _ = self.model
        return self._processor

    def _config(self) -> Any:
        """The model config, read without loading weights."""
        if self._model is not None:
            return self._model.config
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.location, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the {self.family} model config at {self.location}: {exc}",
                hint="give a local directory (or a hub id already in the cache) of a transformers-format "
                "checkpoint such as vidore/colqwen2-v1.0-hf",
            ) from exc

    def _load(self) -> tuple[Any, Any]:
        import torch
        import transformers

        spec = FAMILIES[self.family]
        model_class = getattr(transformers, spec.model_class)
        processor_class = getattr(transformers, spec.processor_class)
        try:
            model = model_class.from_pretrained(
                self.location, dtype=getattr(torch, self.dtype), local_files_only=True
            )
            processor = self._processor or processor_class.from_pretrained(
                self.location, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load {self.family} model from {self.location}: {exc}",
                hint="give a local directory (or a hub id already in the cache) of a transformers-format "
                "checkpoint such as vidore/colqwen2-v1.0-hf",
            ) from exc
        return model.to(self.device).eval(), processor

    # -- embedding ----------------------------------------------------------------------------------------

    def _forward(self, inputs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        model = self.model
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        for key in ("pixel_values",):
            if key in inputs and inputs[key].is_floating_point():
                inputs[key] = inputs[key].to(model.dtype)
        inputs.pop("token_type_ids", None)
        inputs.pop("labels", None)
        try:
            with torch.inference_mode():
                embeddings = model(**inputs).embeddings
        except RuntimeError as exc:  # the one place torch errors are translated
            category = (
                ErrorCategory.OVERLOADED if "out of memory" in str(exc) else ErrorCategory.INVALID_REQUEST
            )
            raise BackendError(
                str(exc), category=category, provider=self.family, model=self.location
            ) from exc
        return (
            embeddings.float().cpu().numpy(),
            inputs["attention_mask"].cpu().numpy().astype(bool),
            inputs["input_ids"].cpu().numpy(),
        )

    def embed_pages(self, pages: Sequence[Page]) -> list[FloatMatrix]:
        """One ``(n_tokens, dim)`` matrix per page image (pooled when ``pool_factor`` is set)."""
        out: list[FloatMatrix] = []
        for start in range(0, len(pages), self.batch_size):
            images = [page.image.to_pil().convert("RGB") for page in pages[start : start + self.batch_size]]
            vectors, mask, _ = self._forward(
                self.processor.process_images(images=images, return_tensors="pt")
            )
            for row in range(len(images)):
                matrix = np.ascontiguousarray(vectors[row][mask[row]], dtype=np.float32)
                out.append(hierarchical_pool(matrix, self.pool_factor) if self.pool_factor else matrix)
        return out

    def embed_queries(self, texts: Sequence[str]) -> list[FloatMatrix]:
        """One ``(n_tokens, dim)`` matrix per query (prefix and augmentation tokens included, as trained)."""
        out: list[FloatMatrix] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            vectors, mask, _ = self._forward(self.processor.process_queries(text=batch, return_tensors="pt"))
            out.extend(np.ascontiguousarray(vectors[i][mask[i]], dtype=np.float32) for i in range(len(batch)))
        return out

    # -- explanation --------------------------------------------------------------------------------------

    def similarity_map(self, query: str, page: Page) -> SimilarityMap:
        """Query-token x image-patch similarities on the page's patch grid (unpooled)."""
        if self.family not in ("colpali", "colqwen2", "colqwen2.5"):
            raise ConfigError(f"similarity maps are not available for {self.family}")
        processor = self.processor
        image_inputs = processor.process_images(
            images=[page.image.to_pil().convert("RGB")], return_tensors="pt"
        )
        grid = self._patch_grid(image_inputs)
        page_vectors, _, ids = self._forward(image_inputs)
        image_token_id = getattr(processor, "image_token_id", None)
        if image_token_id is None:
            image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        patches = page_vectors[0][ids[0] == image_token_id]
        if len(patches) != grid[0] * grid[1]:
            raise BackendError(
                f"{len(patches)} image tokens do not fill a {grid[0]}x{grid[1]} patch grid",
                category=ErrorCategory.MALFORMED_RESPONSE,
                provider=self.family,
                model=self.location,
            )
        query_inputs = processor.process_queries(text=[query], return_tensors="pt")
        query_vectors, query_mask, query_ids = self._forward(query_inputs)
        keep = query_mask[0]
        scores = query_vectors[0][keep] @ patches.T
        tokens = processor.tokenizer.convert_ids_to_tokens(query_ids[0][keep].tolist())
        return SimilarityMap(scores.reshape(len(scores), grid[0], grid[1]).astype(np.float32), list(tokens))

    def _patch_grid(self, image_inputs: Any) -> tuple[int, int]:
        if "image_grid_thw" in image_inputs:
            _, height, width = (int(v) for v in image_inputs["image_grid_thw"][0])
            merge = int(getattr(self.processor.image_processor, "merge_size", 2))
            return height // merge, width // merge
        vision = self.model.config.vlm_config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        return side, side


__all__ = ["FAMILIES", "ColVisionEmbedder", "SimilarityMap", "hierarchical_pool"]
