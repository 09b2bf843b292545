"""Running ``model.generate`` for the in-process backends (transformers VLMs and the offline text model).

Shared by :mod:`~polymodal.backends.transformers_vlm` and :mod:`~polymodal.backends.offline`: blocking
generation (called through ``asyncio.to_thread``), streaming through ``TextIteratorStreamer`` from a worker
thread that a consumer can cancel, finish reasons, usage, and one lock per loaded model so concurrent calls
never interleave on the same weights. Error translation stays in each backend module.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from polymodal.backends.base import (
    BaseChatModel,
    Completion,
    Delta,
    FinishReason,
    GenerateOptions,
    OutputSchema,
    Usage,
)
from polymodal.backends.constrained import GrammarLogitsProcessor, SchemaConstraint
from polymodal.backends.messages import Message
from polymodal.errors import PolymodalError


@dataclass
class LoadedModel:
    """A model, the object that tokenizes for it (tokenizer or processor) and the lock serialising its use."""

    model: Any
    processor: Any
    tokenizer: Any
    eos_token_ids: tuple[int, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: int | None = None

    def use_threads(self) -> None:
        """Pin torch's intra-op threads for this generation thread.

        Explicit ``threads`` wins; otherwise models under a billion parameters decode with one thread: batch-1
        decoding of a small model gains little from more, and OpenMP's spin-waiting makes two threads on a
        shared two-core CPU up to 16x slower (measured: SmolLM2-135M, 0.37 s vs 0.07 s per token under load).
        """
        threads = self.threads
        if threads is None and sum(p.numel() for p in self.model.parameters()) < 1_000_000_000:
            threads = 1
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


class _StopOnEvent(StoppingCriteria):
    """Ends generation once ``event`` is set (the stream's consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> Any:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def generation_kwargs(
    loaded: LoadedModel,
    inputs: dict[str, Any],
    options: GenerateOptions,
    processor: GrammarLogitsProcessor | None,
) -> dict[str, Any]:
    """Keyword arguments for ``model.generate``: greedy at temperature 0, sampling (seeded) otherwise."""
    kwargs: dict[str, Any] = dict(inputs)
    kwargs["max_new_tokens"] = options.max_tokens
    kwargs["eos_token_id"] = list(loaded.eos_token_ids)
    kwargs["pad_token_id"] = loaded.tokenizer.pad_token_id or loaded.eos_token_ids[0]
    if options.temperature > 0:
        kwargs.update(do_sample=True, temperature=options.temperature, top_k=0, top_p=1.0)
        if options.seed is not None:
            torch.manual_seed(options.seed)
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    if processor is not None:
        kwargs["logits_processor"] = LogitsProcessorList([processor])
    return kwargs


def finish_reason(new_tokens: Sequence[int], eos_token_ids: Sequence[int], max_tokens: int) -> FinishReason:
    """``"stop"`` when the model ended the answer, ``"length"`` when the token budget cut it."""
    if new_tokens and new_tokens[-1] in eos_token_ids:
        return "stop"
    return "length" if len(new_tokens) >= max_tokens else "stop"


def generate_blocking(
    loaded: LoadedModel,
    inputs: dict[str, Any],
    options: GenerateOptions,
    processor: GrammarLogitsProcessor | None,
    model_name: str,
) -> Completion:
    """One complete generation under the model's lock (run it in a worker thread)."""
    prompt_length = int(inputs["input_ids"].shape[1])
    with loaded.lock, torch.inference_mode():
        loaded.use_threads()
        output = loaded.model.generate(**generation_kwargs(loaded, inputs, options, processor))
    new_tokens = [int(t) for t in output[0, prompt_length:]]
    if processor is not None:
        processor.raise_if_failed()
    text = loaded.tokenizer.decode(new_tokens, skip_special_tokens=True)
    reason = finish_reason(new_tokens, loaded.eos_token_ids, options.max_tokens)
    return Completion(text, reason, Usage(prompt_length, len(new_tokens)), model_name)


async def stream_generation(
    loaded: LoadedModel, inputs: dict[str, Any], options: GenerateOptions
) -> AsyncIterator[Delta]:
    """Stream text pieces as the model produces them; leaving the iterator early stops the model."""
    prompt_length = int(inputs["input_ids"].shape[1])
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=1.0)
    cancelled = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        kwargs = generation_kwargs(loaded, inputs, options, None)
        kwargs["streamer"] = streamer
        kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnEvent(cancelled)])
        try:
            with loaded.lock, torch.inference_mode():
                loaded.use_threads()
                outcome["output"] = loaded.model.generate(**kwargs)
        except BaseException as exc:  # handed to the consumer, translated there
            outcome["error"] = exc
            streamer.end()

    worker = threading.Thread(target=work, name="polymodal-generate", daemon=True)
    worker.start()
    try:
        while True:
            piece = await asyncio.to_thread(_next_piece, streamer, worker)
            if piece is None:
                break
            if piece:
                yield Delta(piece)
        await asyncio.to_thread(worker.join)
        if "error" in outcome:
            raise outcome["error"]
        new_tokens = [int(t) for t in outcome["output"][0, prompt_length:]]
        reason = finish_reason(new_tokens, loaded.eos_token_ids, options.max_tokens)
        yield Delta("", reason, Usage(prompt_length, len(new_tokens)))
    finally:
        cancelled.set()


def _next_piece(streamer: TextIteratorStreamer, worker: threading.Thread) -> str | None:
    """The next text piece, None at the end; waits in short slices so a dead worker cannot hang us."""
    while True:
        try:
            return str(next(streamer))
        except StopIteration:
            return None
        except Exception:  # queue.Empty after the streamer's timeout
            if not worker.is_alive() and streamer.text_queue.empty():
                return None


class LocalChatModel(BaseChatModel):
    """In-process backends: prepare inputs, constrain decoding to the schema, generate in a worker thread.

    Subclasses say how messages become model inputs (``_prepare``), how their foreign errors translate
    (``_translate``) and, optionally, how the token budget is bounded (``_budget``).
    """

    def _prepare(self, messages: Sequence[Message]) -> tuple[LoadedModel, dict[str, Any]]:
        """Load the model (once) and turn the conversation into its inputs."""
        raise NotImplementedError

    def _translate(self, exc: BaseException) -> PolymodalError:
        """Map a foreign exception of this backend to a polymodal error."""
        raise NotImplementedError

    def _budget(self, inputs: dict[str, Any], options: GenerateOptions) -> GenerateOptions:
        """The generation options actually used (e.g. capped by the context window)."""
        return options

    def _constraint_schema(self, schema: OutputSchema, messages: Sequence[Message]) -> dict[str, Any]:
        """The JSON schema the decoder is constrained to (the requested one, unless a backend narrows it)."""
        return dict(schema.json_schema)

    def _run(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        try:
            loaded, inputs = self._prepare(messages)
            processor = None
            if schema is not None:
                constraint = SchemaConstraint.from_json_schema(
                    self._constraint_schema(schema, messages),
                    loaded.tokenizer,
                    eos_token_ids=loaded.eos_token_ids,
                )
                processor = constraint.logits_processor()
            return generate_blocking(loaded, inputs, self._budget(inputs, options), processor, self.model)
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _generate(
        self, messages: Sequence[Message], schema: OutputSchema | None, options: GenerateOptions
    ) -> Completion:
        return await asyncio.to_thread(self._run, messages, schema, options)

    async def _stream(self, messages: Sequence[Message], options: GenerateOptions) -> AsyncIterator[Delta]:
        try:
            loaded, inputs = await asyncio.to_thread(self._prepare, messages)
            async for delta in stream_generation(loaded, inputs, self._budget(inputs, options)):
                yield delta
        except Exception as exc:
            raise self._translate(exc) from exc


__all__ = [
    "LoadedModel",
    "LocalChatModel",
    "finish_reason",
    "generate_blocking",
    "generation_kwargs",
    "stream_generation",
]
