"""SigLIP, SigLIP 2 (fixed resolution and NaFlex) and CLIP image/text embedders through transformers.

One class, :class:`TransformersDenseEmbedder`, runs any of these checkpoints with the model's own processor;
the architecture comes from the checkpoint's ``config.json`` (``model_type`` ``siglip`` — also the SigLIP 2
fixed-resolution checkpoints —, ``siglip2`` for NaFlex, ``clip``). Model ids::

    siglip:/models/siglip2-base-patch16-224         a local directory (config, weights, processor, tokenizer)
    siglip:google/siglip2-base-patch16-naflex       a hub name already in the local Hugging Face cache
    clip:/models/clip-vit-base-patch32

Nothing is downloaded: loading uses ``local_files_only=True``. Get checkpoints once, on a machine with network
access, e.g. ``huggingface-cli download google/siglip2-base-patch16-224 --local-dir /models/siglip2-b16``.

Image pre-processing uses the processor's PIL backend (no torchvision). Texts are tokenised the way each
family was trained: SigLIP/SigLIP 2 pad to the text model's full length (it pools the last position), CLIP
pads to the longest text. Outputs are float32, L2-normalised rows, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from polymodal.backends.embedding import FloatMatrix
from polymodal.errors import BackendError, ConfigError, ErrorCategory, PolymodalError
from polymodal.media.image import Image

if TYPE_CHECKING:
    from polymodal.backends.registry import ModelSpec
    from polymodal.config import Settings

Precision = Literal["float32", "bfloat16"]

#: Model families this module runs, by the checkpoint's ``model_type``.
SUPPORTED_MODEL_TYPES = ("siglip", "siglip2", "clip")
#: Provider prefixes accepted in model ids (the checkpoint's config decides the architecture).
PROVIDERS = ("siglip", "siglip2", "clip")
#: Images larger than this are downscaled before the processor sees them (it resizes to <= 512^2 anyway).
PREPROCESS_MAX_PIXELS = 4_000_000

CHECKPOINT_HINT = (
    "point the model id at a local transformers checkpoint directory (config.json, model.safetensors, "
    "processor and tokenizer files), e.g. siglip:/models/siglip2-base-patch16-224, downloaded once with "
    "`huggingface-cli download google/siglip2-base-patch16-224 --local-dir /models/siglip2-base-patch16-224`"
)


class TransformersDenseEmbedder:
    """A SigLIP / SigLIP 2 / CLIP checkpoint as a :class:`~polymodal.backends.embedding.DenseEmbedder`.

    Args:
        source: a checkpoint directory, or a hub name present in the local cache.
        provider: the id prefix the user chose (``siglip``, ``siglip2`` or ``clip``); only names the model.
        batch_size: images or texts per forward pass.
        precision: ``"float32"`` or ``"bfloat16"`` weights and activations (outputs are always float32).
        device: a torch device string.
        max_num_patches: NaFlex (SigLIP 2 ``siglip2``) only: patch budget per image (256 by default;
            more patches keep more detail of wide or tall images at a higher cost).

    Attributes:
        id: ``"<model_type>:<source>"``; an index records it and refuses vectors from another model.
        dim: embedding length; ``normalized`` is always True.
        model_type: ``"siglip"``, ``"siglip2"`` or ``"clip"``.
        logit_scale, logit_bias: the checkpoint's learned similarity calibration (``logit_bias`` is None for
            CLIP, which uses a softmax over labels instead of SigLIP's per-label sigmoid).
    """

    normalized = True

    def __init__(
        self,
        source: str | Path,
        *,
        provider: str = "siglip",
        batch_size: int = 16,
        precision: Precision = "float32",
        device: str = "cpu",
        max_num_patches: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if precision not in ("float32", "bfloat16"):
            raise ConfigError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.source = _normalise_source(source)
        self.batch_size = batch_size
        self.precision = precision
        self.device = device
        self.max_num_patches = max_num_patches
        self.model_type = _model_type(self.source)
        self._provider = provider
        self.id = f"{self.model_type}:{self.source}"
        self._model, self._processor = _load(self.source, precision, device, provider)
        config = self._model.config
        self.dim = int(
            config.projection_dim if self.model_type == "clip" else config.vision_config.hidden_size
        )
        self.text_max_length = int(config.text_config.max_position_embeddings)
        self.logit_scale = float(self._model.logit_scale.detach().float().exp())
        bias = getattr(self._model, "logit_bias", None)
        self.logit_bias = float(bias.detach().float()) if bias is not None else None

    def __repr__(self) -> str:
        return f"TransformersDenseEmbedder({self.id!r}, dim={self.dim}, precision={self.precision!r})"

    # -- DenseEmbedder ---------------------------------------------------------------------------------

    def embed_images(self, images: Sequence[Image]) -> FloatMatrix:
        """One normalised row per image, in order; an undecodable image raises InputError naming it."""
        rows = [
            self._image_batch(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)
        ]
        return _stack(rows, self.dim)

    def embed_texts(self, texts: Sequence[str]) -> FloatMatrix:
        """One normalised row per text (any language the checkpoint's tokenizer covers), in order."""
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a sequence of strings, not one string")
        rows = [
            self._text_batch(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)
        ]
        return _stack(rows, self.dim)

    def similarity_to_probability(self, scores: FloatMatrix) -> FloatMatrix:
        """Turn image-text cosine scores ``(n_images, n_labels)`` into the model's own probabilities.

        SigLIP: an independent sigmoid per label (``sigmoid(scale * cos + bias)``); CLIP: softmax over labels.
        """
        logits = scores.astype(np.float64) * self.logit_scale
        if self.logit_bias is not None:
            return np.asarray(1.0 / (1.0 + np.exp(-(logits + self.logit_bias))), dtype=np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)

    # -- internals -------------------------------------------------------------------------------------

    def _image_batch(self, images: Sequence[Image]) -> FloatMatrix:
        pil = [image.resized_to_budget(PREPROCESS_MAX_PIXELS).to_pil() for image in images]
        kwargs: dict[str, Any] = {"return_tensors": "pt"}
        if self.model_type == "siglip2" and self.max_num_patches is not None:
            kwargs["max_num_patches"] = self.max_num_patches
        with self._translated("image embedding"):
            inputs = self._processor.image_processor(pil, **kwargs)
            import torch

            with torch.inference_mode():
                tensors = {k: v.to(self.device) for k, v in inputs.items()}
                if "pixel_values" in tensors:
                    tensors["pixel_values"] = tensors["pixel_values"].to(self._model.dtype)
                output = self._model.get_image_features(**tensors)
                return _normalised(_pooled(output))

    def _text_batch(self, texts: Sequence[str]) -> FloatMatrix:
        if self.model_type == "clip":
            padding: str | bool = True
        else:
            padding = "max_length"  # SigLIP pools the last position: pad exactly as in training
        with self._translated("text embedding"):
            tokens = self._processor.tokenizer(
                list(texts),
                padding=padding,
                truncation=True,
                max_length=self.text_max_length,
                return_tensors="pt",
            )
            import torch

            with torch.inference_mode():
                inputs = {"input_ids": tokens["input_ids"].to(self.device)}
                if self.model_type == "clip" and "attention_mask" in tokens:
                    inputs["attention_mask"] = tokens["attention_mask"].to(self.device)
                output = self._model.get_text_features(**inputs)
                return _normalised(_pooled(output))

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """The one place foreign exceptions of this backend become polymodal errors."""
        try:
            yield
        except PolymodalError:
            raise
        except MemoryError as exc:
            raise BackendError(
                f"{what} ran out of memory; lower batch_size",
                category=ErrorCategory.OVERLOADED,
                provider=self._provider,
                model=self.source,
            ) from exc
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise BackendError(
                f"{what} failed: {exc}",
                category=ErrorCategory.INVALID_REQUEST,
                provider=self._provider,
                model=self.source,
            ) from exc


def _normalise_source(source: str | Path) -> str:
    text = str(source).strip()
    if not text:
        raise ConfigError("empty model source", hint=CHECKPOINT_HINT)
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")):
        return str(path.resolve())
    return text


def _config_json(source: str) -> dict[str, Any]:
    path = Path(source)
    local = path.is_absolute() or path.exists()
    config_file = path / "config.json" if local else _cached_config(source)
    try:
        data: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no transformers checkpoint at {source!r} (config.json missing)", hint=CHECKPOINT_HINT
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {config_file}: {exc}", hint=CHECKPOINT_HINT) from exc
    return data


def _cached_config(repo_id: str) -> Path:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        return Path(repo_id) / "config.json"
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid hub name either
        found = None
    return Path(found) if isinstance(found, str) else Path(repo_id) / "config.json"


def _model_type(source: str) -> str:
    model_type = str(_config_json(source).get("model_type", ""))
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{source!r} holds a {model_type or 'unknown'!r} model; this backend runs "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} checkpoints",
            hint=CHECKPOINT_HINT,
        )
    return model_type


def _load(source: str, precision: Precision, device: str, provider: str) -> tuple[Any, Any]:
    try:
        import torch
        import transformers
        from transformers import AutoModel, AutoProcessor
    except ImportError as exc:
        raise ConfigError(
            f"the {provider!r} backend needs torch and transformers ({exc.name} is missing)",
            hint="pip install 'polymodal[local]'",
        ) from exc
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    # The PIL image processors: the torchvision ("fast") ones are not required, nor installed here.
    backend = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {"use_fast": False}
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=True, **backend)
        model = AutoModel.from_pretrained(source, local_files_only=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"cannot load {provider} checkpoint {source!r}: {exc}", hint=CHECKPOINT_HINT
        ) from exc
    model.to(device).eval()
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise ConfigError(
            f"{source!r} has no image processor and tokenizer saved beside the weights", hint=CHECKPOINT_HINT
        )
    return model, processor


def _pooled(output: Any) -> Any:
    """transformers >= 5 returns a ModelOutput whose ``pooler_output`` is the projected embedding."""
    return getattr(output, "pooler_output", output)


def _normalised(tensor: Any) -> FloatMatrix:
    array = tensor.detach().float().cpu().numpy().astype(np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _stack(rows: list[FloatMatrix], dim: int) -> FloatMatrix:
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    return np.concatenate(rows, axis=0)


def create_embedder(spec: ModelSpec, settings: Settings | None = None) -> TransformersDenseEmbedder:
    """Registry factory: ``siglip:SOURCE``, ``siglip2:SOURCE`` or ``clip:SOURCE``."""
    if spec.provider not in PROVIDERS:
        raise ConfigError(f"provider {spec.provider!r} is not one of {', '.join(PROVIDERS)}")
    return TransformersDenseEmbedder(spec.model, provider=spec.provider)


__all__ = [
    "PROVIDERS",
    "SUPPORTED_MODEL_TYPES",
    "TransformersDenseEmbedder",
    "create_embedder",
]
