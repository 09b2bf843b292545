"""Audio: float32 PCM plus its sample rate; safe decoding of any container, one correct resampler, chunking.

Decoding goes through soundfile (WAV, FLAC, OGG/Vorbis, MP3 via libsndfile) and falls back to PyAV
(anything FFmpeg reads: MP4/AAC, WebM/Opus, ...). Untrusted input is checked against
:class:`~polymodal.media.limits.Limits` (``max_bytes`` before reading, ``max_seconds`` from the header *and*
while decoding, so a lying header cannot cause an unbounded decode). Every failure is an
:class:`~polymodal.errors.InputError` naming the source.

Resampling is a polyphase FIR (``scipy.signal.resample_poly``, Kaiser window) at the exact rational ratio of
the two rates: anti-aliased, no drift, no phase shift. Pipelines resample once, at the edge.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from polymodal.errors import InputError
from polymodal.media.limits import DEFAULT_LIMITS, Limits

PCMArray = NDArray[np.float32]


def resample_pcm(samples: PCMArray, from_rate: int, to_rate: int) -> PCMArray:
    """Resample ``samples`` (shape ``(n,)`` or ``(n, channels)``) from one rate to another, anti-aliased."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or len(samples) == 0:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    common = gcd(from_rate, to_rate)
    up, down = to_rate // common, from_rate // common
    out = resample_poly(samples.astype(np.float32, copy=False), up, down, axis=0, window=("kaiser", 5.0))
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class Audio:
    """A clip of PCM audio.

    Attributes:
        samples: float32 in [-1, 1]; shape ``(n,)`` for mono or ``(n, channels)``.
        sample_rate: samples per second per channel.
        source: where the clip came from (a path or ``"<memory>"``), used in error messages.
    """

    samples: PCMArray
    sample_rate: int
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise InputError(self.source, f"invalid sample rate {self.sample_rate}")
        if self.samples.ndim not in (1, 2):
            raise InputError(self.source, f"audio must be 1-D or 2-D, got shape {self.samples.shape}")
        if self.samples.dtype != np.float32:
            object.__setattr__(self, "samples", self.samples.astype(np.float32))

    # -- construction ---------------------------------------------------------------------------------------

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        sample_rate: int | None = None,
        mono: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Audio:
        """Decode an audio (or video) file; optionally downmix and resample it once to ``sample_rate``."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(str(path), f"cannot read file ({exc.strerror or exc})") from exc
        if size > limits.max_bytes:
            raise InputError(str(path), f"file is {size} bytes", limit=f"max_bytes={limits.max_bytes}")
        return cls.from_bytes(
            path.read_bytes(), source=str(path), sample_rate=sample_rate, mono=mono, limits=limits
        )

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        source: str = "<memory>",
        sample_rate: int | None = None,
        mono: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Audio:
        """Decode encoded audio held in memory (any container soundfile or FFmpeg reads)."""
        if len(data) > limits.max_bytes:
            raise InputError(source, f"data is {len(data)} bytes", limit=f"max_bytes={limits.max_bytes}")
        if not data:
            raise InputError(source, "empty audio data")
        decoded = _decode_soundfile(data, source, limits)
        if decoded is None:
            decoded = _decode_pyav(data, source, limits)
        samples, rate = decoded
        clip = cls(samples, rate, source)
        if mono:
            clip = clip.to_mono()
        if sample_rate is not None:
            clip = clip.resample(sample_rate)
        return clip

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> Audio:
        """A mono clip of digital silence."""
        return cls(np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate)

    @classmethod
    def concatenate(cls, clips: Sequence[Audio]) -> Audio:
        """Join clips end to end; they must share rate and channel count."""
        if not clips:
            raise ValueError("concatenate() needs at least one clip")
        rate = clips[0].sample_rate
        if any(c.sample_rate != rate for c in clips):
            raise ValueError("concatenate() needs clips of one sample rate; resample them first")
        return cls(np.concatenate([c.samples for c in clips], axis=0), rate, clips[0].source)

    # -- properties -----------------------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        """Number of channels."""
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])

    @property
    def num_samples(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    # -- transforms -----------------------------------------------------------------------------------------

    def to_mono(self) -> Audio:
        """Average the channels into one (a mono clip is returned unchanged)."""
        if self.samples.ndim == 1:
            return self
        return Audio(self.samples.mean(axis=1, dtype=np.float32), self.sample_rate, self.source)

    def resample(self, sample_rate: int) -> Audio:
        """The clip at another rate (polyphase, anti-aliased); unchanged when the rate already matches."""
        if sample_rate == self.sample_rate:
            return self
        return Audio(resample_pcm(self.samples, self.sample_rate, sample_rate), sample_rate, self.source)

    def slice(self, start: float, end: float | None = None) -> Audio:
        """The part between two times in seconds (clamped to the clip)."""
        first = max(0, round(start * self.sample_rate))
        last = self.num_samples if end is None else min(self.num_samples, round(end * self.sample_rate))
        return Audio(self.samples[first:last], self.sample_rate, self.source)

    def overlay(self, other: Audio, at: float) -> Audio:
        """Mix ``other`` in from ``at`` seconds on, extending the clip if needed (clipped to [-1, 1])."""
        if other.sample_rate != self.sample_rate or other.channels != self.channels:
            raise ValueError("overlay() needs clips of one sample rate and channel count")
        start = round(at * self.sample_rate)
        length = max(self.num_samples, start + other.num_samples)
        shape = (length,) if self.samples.ndim == 1 else (length, self.channels)
        mixed = np.zeros(shape, dtype=np.float32)
        mixed[: self.num_samples] += self.samples
        mixed[start : start + other.num_samples] += other.samples
        return Audio(np.clip(mixed, -1.0, 1.0), self.sample_rate, self.source)

    def chunks(self, samples_per_chunk: int, *, pad_last: bool = False) -> Iterator[PCMArray]:
        """Consecutive chunks of ``samples_per_chunk`` samples; the last one is zero-padded when asked."""
        if samples_per_chunk <= 0:
            raise ValueError("samples_per_chunk must be positive")
        for first in range(0, self.num_samples, samples_per_chunk):
            piece = self.samples[first : first + samples_per_chunk]
            if pad_last and len(piece) < samples_per_chunk:
                pad = [(0, samples_per_chunk - len(piece))] + [(0, 0)] * (piece.ndim - 1)
                piece = np.pad(piece, pad)
            yield piece

    # -- output ---------------------------------------------------------------------------------------------

    def to_wav_bytes(self) -> bytes:
        """The clip as a 16-bit PCM WAV file in memory."""
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, self.samples, self.sample_rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()

    def to_pcm16(self) -> bytes:
        """Raw little-endian signed 16-bit samples (interleaved when multichannel)."""
        clipped = np.clip(self.samples, -1.0, 1.0)
        return (clipped * 32767.0).round().astype("<i2").tobytes()

    @classmethod
    def from_pcm16(
        cls, data: bytes, sample_rate: int, *, channels: int = 1, source: str = "<memory>"
    ) -> Audio:
        """Build a clip from raw little-endian signed 16-bit samples."""
        if len(data) % (2 * channels):
            raise InputError(
                source, f"{len(data)} bytes is not a whole number of {channels}-channel int16 frames"
            )
        ints = np.frombuffer(data, dtype="<i2")
        samples = ints.astype(np.float32) / 32768.0
        if channels > 1:
            samples = samples.reshape(-1, channels)
        return cls(samples, sample_rate, source)

    def save(self, path: str | Path) -> Path:
        """Write a 16-bit PCM WAV file and return its path."""
        path = Path(path)
        path.write_bytes(self.to_wav_bytes())
        return path

    def __repr__(self) -> str:
        return (
            f"Audio({self.duration:.2f}s, {self.sample_rate} Hz, {self.channels} ch, source={self.source!r})"
        )


def _too_long(source: str, seconds: float, limits: Limits) -> InputError:
    return InputError(source, f"audio is {seconds:.1f} s long", limit=f"max_seconds={limits.max_seconds:g}")


def _decode_soundfile(data: bytes, source: str, limits: Limits) -> tuple[PCMArray, int] | None:
    """Decode with libsndfile; None when it does not know the format (PyAV is tried next)."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            if handle.samplerate <= 0 or handle.channels <= 0:
                raise InputError(source, "invalid header (no sample rate or channels)")
            seconds = handle.frames / handle.samplerate
            if seconds > limits.max_seconds:
                raise _too_long(source, seconds, limits)
            samples = handle.read(dtype="float32", always_2d=True)
            return samples, int(handle.samplerate)
    except soundfile.LibsndfileError:
        return None
    except (RuntimeError, ValueError) as exc:  # libsndfile raises these for corrupt bodies
        raise InputError(source, f"cannot decode audio ({exc})") from exc


def _decode_pyav(data: bytes, source: str, limits: Limits) -> tuple[PCMArray, int]:
    """Decode with FFmpeg through PyAV, counting decoded samples against ``max_seconds``."""
    try:
        import av
    except ImportError as exc:
        raise InputError(
            source, "not a WAV/FLAC/OGG/MP3 file and PyAV (pip install av) is not installed"
        ) from exc
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            streams = container.streams.audio
            if not streams:
                raise InputError(source, "no audio stream")
            stream = streams[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            if rate <= 0:
                raise InputError(source, "audio stream has no sample rate")
            if container.duration is not None and container.duration / 1e6 > limits.max_seconds:
                raise _too_long(source, container.duration / 1e6, limits)
            channels = stream.codec_context.channels or 1
            layout = "mono" if channels == 1 else "stereo"
            resampler = av.AudioResampler(
                format="flt", layout=layout, rate=rate
            )  # format only: rate unchanged
            pieces: list[PCMArray] = []
            total = 0
            max_samples = limits.max_seconds * rate
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    array = converted.to_ndarray().reshape(-1, 1 if layout == "mono" else 2)
                    pieces.append(array.astype(np.float32, copy=False))
                    total += len(array)
                if total > max_samples:
                    raise _too_long(source, total / rate, limits)
            for converted in resampler.resample(None):
                tail = converted.to_ndarray().reshape(-1, 1 if layout == "mono" else 2)
                pieces.append(tail.astype(np.float32, copy=False))
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InputError(source, f"cannot decode audio ({exc})") from exc
    if not pieces:
        raise InputError(source, "audio stream holds no samples")
    return np.concatenate(pieces, axis=0).astype(np.float32), rate


__all__ = ["Audio", "PCMArray", "resample_pcm"]
