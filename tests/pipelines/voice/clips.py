"""Real speech for the voice tests: pytest-audioeval's English clips and Debian's LibriVox utterances."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


@dataclass(frozen=True)
class Clip:
    """A recording and what is said in it."""

    path: Path
    text: str


def _audioeval_dir() -> Path | None:
    spec = importlib.util.find_spec("pytest_audioeval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "samples" / "audio" / "en"


def audioeval_clips() -> list[Clip]:
    """English clips shipped in pytest-audioeval (hello world, counting, quick brown fox)."""
    folder = _audioeval_dir()
    if folder is None or not folder.is_dir():
        return []
    return [Clip(wav, wav.with_suffix(".txt").read_text().strip()) for wav in sorted(folder.glob("*.wav"))]


def librivox_clips() -> list[Clip]:
    """The LibriVox 'Sense and Sensibility' utterances of Debian's pocketsphinx-testdata."""
    listing = LIBRIVOX_DIR / "transcription"
    if not listing.is_file():
        return []
    clips = []
    for line in listing.read_text().splitlines():
        match = re.match(r"<s>(.*)</s> \((.*)\)", line.strip())
        if match and (LIBRIVOX_DIR / f"{match.group(2)}.wav").is_file():
            clips.append(Clip(LIBRIVOX_DIR / f"{match.group(2)}.wav", match.group(1).strip()))
    return clips


def real_speech() -> list[Clip]:
    """All real English clips available here."""
    return audioeval_clips() + librivox_clips()


def clip(name: str) -> Clip:
    """A clip by file stem; skips the test when the data package is not installed."""
    for item in real_speech():
        if item.path.stem == name or item.path.stem.endswith(name):
            return item
    pytest.skip(f"speech clip {name!r} is not installed (pytest-audioeval / pocketsphinx-testdata)")


_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
_SPELLED = {"mr": "mister", "mrs": "missus", "dr": "doctor", **{str(i): w for i, w in enumerate(_NUMBERS)}}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; abbreviations and small numbers spelled out."""
    return [_SPELLED.get(w, w) for w in re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance divided by the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(len(ref), 1)
