from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile

from polymodal.errors import InputError
from polymodal.media.audio import Audio, resample_pcm
from polymodal.media.limits import Limits


def sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize(("src", "dst"), [(44100, 16000), (16000, 22050), (48000, 16000), (8000, 16000)])
def test_resampling_keeps_a_sine_at_its_frequency_and_level(src: int, dst: int) -> None:
    clip = Audio(sine(440.0, src, 2.0), src)
    out = clip.resample(dst)
    assert out.sample_rate == dst
    assert out.num_samples == round(clip.num_samples * dst / src)
    assert dominant_frequency(out.samples, dst) == pytest.approx(440.0, abs=1.0)
    core = out.samples[dst // 10 : -dst // 10]  # away from the filter's edge transients
    assert np.sqrt(np.mean(core**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_downsampling_removes_what_the_new_rate_cannot_hold() -> None:
    # a 10 kHz tone cannot exist at 16 kHz (Nyquist 8 kHz); naive decimation would alias it to 6 kHz
    out = resample_pcm(sine(10_000.0, 48_000, 1.0), 48_000, 16_000)
    assert np.sqrt(np.mean(out[1600:-1600] ** 2)) < 0.005


def test_resampling_multichannel_and_identity() -> None:
    stereo = np.stack([sine(300, 16000), sine(600, 16000)], axis=1)
    out = Audio(stereo, 16000).resample(8000)
    assert out.channels == 2 and out.num_samples == 8000
    assert dominant_frequency(out.samples[:, 1], 8000) == pytest.approx(600, abs=1.5)
    same = Audio(sine(300, 16000), 16000)
    assert same.resample(16000) is same


def test_wav_round_trip_and_decode_to_target_rate(tmp_path) -> None:
    clip = Audio(sine(1000, 44100, 0.5), 44100)
    path = clip.save(tmp_path / "tone.wav")
    back = Audio.from_path(path)
    assert back.sample_rate == 44100 and back.num_samples == clip.num_samples
    assert np.max(np.abs(back.samples - clip.samples)) < 1e-4  # 16-bit quantization only
    at16 = Audio.from_path(path, sample_rate=16000)
    assert at16.sample_rate == 16000 and dominant_frequency(at16.samples, 16000) == pytest.approx(1000, abs=2)


def test_stereo_is_downmixed_by_default(tmp_path) -> None:
    stereo = np.stack([sine(300, 16000), -sine(300, 16000) * 0 + 0.25], axis=1).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, stereo, 16000, format="WAV", subtype="FLOAT")
    mono = Audio.from_bytes(buffer.getvalue())
    assert mono.channels == 1
    np.testing.assert_allclose(mono.samples, stereo.mean(axis=1), atol=1e-6)
    kept = Audio.from_bytes(buffer.getvalue(), mono=False)
    assert kept.channels == 2


def _encode_with_pyav(samples: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame_size = 960
        pcm = (samples * 32767).astype(np.int16)
        for first in range(0, len(pcm), frame_size):
            frame = av.AudioFrame.from_ndarray(
                pcm[None, first : first + frame_size], format="s16", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = first
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def test_containers_libsndfile_cannot_read_go_through_pyav() -> None:
    data = _encode_with_pyav(sine(440, 48000, 1.0), 48000, "mp4", "aac")
    clip = Audio.from_bytes(data, source="tone.m4a", sample_rate=16000)
    assert clip.sample_rate == 16000
    assert clip.duration == pytest.approx(1.0, abs=0.1)
    assert dominant_frequency(clip.samples, 16000) == pytest.approx(440, abs=3)


def test_limits_and_bad_input_raise_input_errors_naming_the_source(tmp_path) -> None:
    wav = Audio(sine(440, 16000, 3.0), 16000).to_wav_bytes()
    with pytest.raises(InputError, match="max_seconds=2"):
        Audio.from_bytes(wav, source="long.wav", limits=Limits(max_seconds=2.0))
    with pytest.raises(InputError, match="max_bytes=100"):
        Audio.from_bytes(wav, source="big.wav", limits=Limits(max_bytes=100))
    with pytest.raises(InputError, match=r"junk\.bin"):
        Audio.from_bytes(b"\x00\x01garbage" * 100, source="junk.bin")
    with pytest.raises(InputError, match="empty"):
        Audio.from_bytes(b"", source="empty.wav")
    with pytest.raises(InputError, match=r"missing\.wav"):
        Audio.from_path(tmp_path / "missing.wav")
    aac = _encode_with_pyav(sine(440, 48000, 3.0), 48000, "mp4", "aac")
    with pytest.raises(InputError, match="max_seconds"):
        Audio.from_bytes(aac, source="long.m4a", limits=Limits(max_seconds=1.0))


def test_chunks_overlay_slice_and_pcm16() -> None:
    clip = Audio(np.arange(10, dtype=np.float32) / 10, 10)
    chunks = list(clip.chunks(4, pad_last=True))
    assert [len(c) for c in chunks] == [4, 4, 4] and chunks[-1][-2:].tolist() == [0.0, 0.0]
    assert [len(c) for c in clip.chunks(4)] == [4, 4, 2]
    mixed = Audio.silence(1.0, 10).overlay(Audio(np.ones(5, dtype=np.float32), 10), at=0.8)
    assert mixed.num_samples == 13 and mixed.samples[8:].tolist() == [1.0] * 5
    assert clip.slice(0.2, 0.5).samples.tolist() == pytest.approx([0.2, 0.3, 0.4])
    back = Audio.from_pcm16(clip.to_pcm16(), 10)
    np.testing.assert_allclose(back.samples, clip.samples, atol=2 / 32768)
    with pytest.raises(InputError):
        Audio.from_pcm16(b"\x00\x01\x02", 10)
