"""A :class:`~polymodal.backends.embedding.DenseEmbedder` over an OpenAI-compatible ``/v1/embeddings`` API.

Works with OpenAI and with self-hosted embedding servers that speak the same wire format (vLLM, Hugging Face
TEI, Infinity, LM Studio, Ollama's ``/v1``). Model ids::

    openai-embeddings:text-embedding-3-small                      OpenAI (OPENAI_API_KEY)
    openai-embeddings:BAAI/bge-m3@http://gpu-box:8000/v1            a self-hosted server

Texts go in batches as ``{"model", "input": [...], "encoding_format": "float"}``. Images are sent only when
the endpoint embeds them (``images=True``): one request per image in vLLM's multimodal form, ``"messages"``
holding an ``image_url`` part with a data URL. Rows come back L2-normalised, in input order (by ``index``).

The SDK's own retries are off (``max_retries=0``); the one retry layer (:mod:`polymodal.backends._retry`)
repeats transient failures, and SDK exceptions are translated by the OpenAI-compatible chat adapter's
translation (:func:`polymodal.backends.openai_compat.translate_error`), not a second mapping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from polymodal.backends import _http
from polymodal.backends._retry import RetryPolicy, call_with_retries
from polymodal.backends.embedding import FloatMatrix
from polymodal.errors import BackendError, ConfigError
from polymodal.media.image import Image

if TYPE_CHECKING:
    from polymodal.backends.registry import ModelSpec
    from polymodal.config import Settings

T = TypeVar("T")
PROVIDER = "openai-embeddings"
OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"
IMAGE_MAX_PIXELS = 1_000_000


class OpenAIEmbeddings:
    """Embeddings from an OpenAI-compatible server (see the module docstring).

    Args:
        model: the model name the server knows.
        base_url: the ``.../v1`` endpoint.
        api_key: bearer token (any non-empty string for servers without auth).
        timeout: seconds per request.
        retry: the retry policy for transient failures.
        dimensions: ask the server for shorter vectors (OpenAI ``text-embedding-3-*``; Matryoshka models).
        batch_size: texts per request.
        images: the endpoint embeds images (vLLM multimodal embedding models); else embed_images refuses.

    Attributes:
        id: ``"openai-embeddings:<model>"`` (plus ``"#<dimensions>"`` when shortened); the endpoint's URL is
            not part of it, so moving a server keeps its indexes valid.
        dim: the vector length (asked for once, with a one-text request, when not known from ``dimensions``).
    """

    normalized = True
    provider = PROVIDER

    def __init__(
        self,
        model: str,
        *,
        base_url: str = OPENAI_URL,
        api_key: str = NO_KEY,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        dimensions: int | None = None,
        batch_size: int = 64,
        images: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.images = images
        self.retry = retry or RetryPolicy()
        self.id = f"{PROVIDER}:{model}" + (f"#{dimensions}" if dimensions else "")
        self._dim = dimensions
        self._api_key = api_key
        self._timeout = timeout
        self._clients = _http.LoopBound(self._new_client)

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings({self.model!r} @ {self.base_url})"

    def _new_client(self) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self._timeout,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=_http.ssl_context()),
        )

    @property
    def dim(self) -> int:
        """Vector length (one probe request the first time, unless ``dimensions`` was given)."""
        if self._dim is None:
            self._dim = int(self.embed_texts(["dimension probe"]).shape[1])
        return self._dim

    # -- async API -----------------------------------------------------------------------------------------

    async def aembed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        """One normalised row per text, in order."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a sequence of strings, not one string")
        rows: list[FloatMatrix] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            body: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "float"}
            if self.dimensions:
                body["dimensions"] = self.dimensions
            rows.append(await self._embed(body, len(batch)))
        return self._stack(rows)

    async def aembed_images(self, images: Sequence[Image]) -> FloatMatrix:
        """One normalised row per image (only for endpoints that embed images)."""
        if not self.images:
            raise ConfigError(
                f"{self.id} embeds text only",
                hint="pass images=True for a multimodal embedding server (e.g. vLLM serving a VLM2Vec model)",
            )
        rows = []
        for image in images:
            url = image.encode("JPEG", quality=90, max_pixels=IMAGE_MAX_PIXELS).data_url()
            content = [{"type": "image_url", "image_url": {"url": url}}]
            body: dict[str, Any] = {
                "model": self.model,
                "encoding_format": "float",
                "messages": [{"role": "user", "content": content}],
            }
            rows.append(await self._embed(body, 1))
        return self._stack(rows)

    # -- sync API (DenseEmbedder) ----------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        """Blocking :meth:`aembed_texts`."""
        return _run(self.aembed_texts(texts))

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        """Blocking :meth:`aembed_images`."""
        return _run(self.aembed_images(images))

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        client = self._clients.current()
        if client is not None:
            await client.close()

    # -- internals -----------------------------------------------------------------------------------------

    async def _embed(self, body: dict[str, Any], count: int) -> FloatMatrix:
        return await call_with_retries(lambda: self._attempt(body, count), self.retry)

    async def _attempt(self, body: dict[str, Any], count: int) -> FloatMatrix:
        from openai.types import CreateEmbeddingResponse

        try:
            response = await self._clients.get().post(
                "/embeddings", cast_to=CreateEmbeddingResponse, body=body
            )
            return self._parse(response, count)
        except BackendError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> BackendError:
        """The one OpenAI SDK exception mapping (shared with the chat adapter), applied to this endpoint."""
        from polymodal.backends.openai_compat import translate_error

        return translate_error(exc, provider=PROVIDER, model=self.model, base_url=self.base_url)

    def _parse(self, response: Any, count: int) -> FloatMatrix:
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != count or [d.index for d in data] != list(range(count)):
            raise _http.malformed(PROVIDER, self.model, f"asked for {count} embeddings, got {len(data)}")
        try:
            matrix = np.asarray([d.embedding for d in data], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise _http.malformed(PROVIDER, self.model, f"embeddings are not float lists: {exc}") from exc
        if matrix.ndim != 2 or matrix.shape[1] == 0 or not np.isfinite(matrix).all():
            raise _http.malformed(PROVIDER, self.model, f"unusable embeddings of shape {matrix.shape}")
        if self._dim is not None and matrix.shape[1] != self._dim:
            raise _http.malformed(
                PROVIDER, self.model, f"expected {self._dim}-d embeddings, got {matrix.shape[1]}-d"
            )
        self._dim = int(matrix.shape[1])
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return np.ascontiguousarray(matrix / norms, dtype=np.float32)

    def _stack(self, rows: list[FloatMatrix]) -> FloatMatrix:
        if rows:
            return np.concatenate(rows, axis=0)
        return np.zeros((0, self._dim or 0), dtype=np.float32)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def create_embedder(spec: ModelSpec, settings: Settings) -> OpenAIEmbeddings:
    """Registry factory for ``openai-embeddings:MODEL[@BASE_URL]``."""
    base_url = spec.base_url or settings.openai_base_url or OPENAI_URL
    key = settings.secret("openai_api_key") if base_url.startswith(OPENAI_URL) else None
    key = key or settings.secret("openai_compat_api_key") or settings.secret("openai_api_key")
    if base_url.startswith(OPENAI_URL) and not key:
        raise ConfigError("OpenAI embeddings need an API key", hint="set OPENAI_API_KEY")
    return OpenAIEmbeddings(
        spec.model,
        base_url=base_url,
        api_key=key or NO_KEY,
        timeout=settings.request_timeout,
        retry=RetryPolicy.from_settings(settings.retry),
    )


__all__ = ["OpenAIEmbeddings", "create_embedder"]
