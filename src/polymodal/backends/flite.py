"""Text-to-speech with CMU Flite (the Debian ``flite`` binary), sentence-streamed.

Each sentence runs one ``flite`` process (about 0.1 s); it is killed at once when the stream is closed, so a
barge-in never waits for it. Install with ``apt-get install flite``. Flite is BSD-like licensed.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from polymodal.backends.speech import TTSChunk, TTSOptions, split_sentences
from polymodal.errors import BackendError, ConfigError, ErrorCategory, InputError
from polymodal.media.audio import Audio

#: Voices built into Debian's flite and their output rates.
VOICE_RATES = {"kal": 8000, "kal16": 16000, "awb": 16000, "rms": 16000, "slt": 16000, "awb_time": 8000}


class FliteTTS:
    """Flite text-to-speech (:class:`~polymodal.backends.speech.TTS`) through its command-line program.

    Args:
        voice: one of :data:`VOICE_RATES` (``slt`` is a clear female US voice at 16 kHz).
        binary: the flite executable (found on PATH by default).
        timeout: seconds allowed for one sentence.
        min_sentence_chars: shorter sentences are joined to the next before synthesis.
        first_clause_chars: the first piece of a reply may end at a comma once this long (None: never).
    """

    provider = "flite"

    def __init__(
        self,
        voice: str = "slt",
        *,
        binary: str | None = None,
        timeout: float = 30.0,
        min_sentence_chars: int = 12,
        first_clause_chars: int | None = 24,
    ) -> None:
        if voice not in VOICE_RATES:
            raise ConfigError(f"unknown flite voice {voice!r}", hint=f"one of {', '.join(VOICE_RATES)}")
        found = binary or shutil.which("flite")
        if not found:
            raise ConfigError("flite is not installed", hint="apt-get install flite")
        self.binary = found
        self.model = voice
        self.sample_rate = VOICE_RATES[voice]
        self.timeout = timeout
        self.min_sentence_chars = min_sentence_chars
        self.first_clause_chars = first_clause_chars

    async def render(self, text: str, options: TTSOptions) -> Audio:
        """Run flite on one piece of text; the process is killed if the caller is cancelled."""
        with tempfile.TemporaryDirectory(prefix="polymodal-flite-") as tmp:
            out = Path(tmp) / "speech.wav"
            args = [self.binary, "-voice", options.voice or self.model, "-o", str(out)]
            if options.speed != 1.0:
                args += ["--setf", f"duration_stretch={1.0 / max(options.speed, 0.1):.3f}"]
            process = await asyncio.create_subprocess_exec(
                *args,
                "-t",
                text,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, stderr = await asyncio.wait_for(process.communicate(), self.timeout)
            except (asyncio.CancelledError, TimeoutError) as exc:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                if isinstance(exc, TimeoutError):
                    raise BackendError(
                        f"flite took over {self.timeout} s", category=ErrorCategory.TIMEOUT, provider="flite"
                    ) from exc
                raise
            if process.returncode != 0 or not out.is_file():
                message = stderr.decode(errors="replace").strip() or f"exit status {process.returncode}"
                raise BackendError(message, category=ErrorCategory.SERVER, provider="flite")
            try:
                audio = Audio.from_path(out)
            except InputError as exc:
                raise BackendError(
                    str(exc), category=ErrorCategory.MALFORMED_RESPONSE, provider="flite"
                ) from exc
        if audio.sample_rate != self.sample_rate:  # a voice chosen per call may have another rate
            audio = audio.resample(self.sample_rate)
        return audio

    async def stream(
        self, text: AsyncIterable[str], options: TTSOptions | None = None
    ) -> AsyncIterator[TTSChunk]:
        """One chunk per sentence, each rendered as soon as the sentence is complete."""
        opts = options or TTSOptions()
        async for sentence in split_sentences(text, self.min_sentence_chars, self.first_clause_chars):
            audio = await self.render(sentence.strip(), opts)
            yield TTSChunk(pcm=audio.samples, sample_rate=self.sample_rate, text=sentence)

    async def synthesize(self, text: str, options: TTSOptions | None = None) -> Audio:
        """Speak a whole text in one flite run."""
        return await self.render(text, options or TTSOptions())

    async def aclose(self) -> None:
        """Nothing is held between calls."""


__all__ = ["VOICE_RATES", "FliteTTS"]
