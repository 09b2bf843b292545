"""The offline stack on real speech: silero + whisper tiny.en + (scripted LLM) + Piper or flite, in real time.

The LLM is scripted here to keep the test inside its time budget (SmolLM2's first load de-quantizes a GGUF
for minutes); the speech side — VAD, STT, TTS, turn-taking, barge-in — is all real.
"""

from __future__ import annotations

import pytest

from polymodal.backends.testing import FakeChatModel
from polymodal.media.audio import Audio
from polymodal.pipelines.voice.simulate import BargeIn, simulate
from polymodal.pipelines.voice.stack import make_stt, make_tts, make_vad
from tests.pipelines.voice.clips import clip, word_error_rate

pytestmark = pytest.mark.slow

REPLY = "That sentence uses every letter of the alphabet. People use it to test keyboards."
LONG_REPLY = (
    "That is a famous line from Jane Austen. It opens the story of the Dashwood family. "
    "Their half brother promised to help them, but his wife talked him out of it."
)


@pytest.fixture(scope="module")
def engines():
    return make_stt("whisper"), make_tts("auto")


async def test_real_speech_in_spoken_reply_out_and_whisper_hears_the_reply(engines) -> None:
    stt, tts = engines
    sample = clip("quick_brown_fox")
    result = await simulate(
        Audio.from_path(sample.path), vad=make_vad("silero"), stt=stt, llm=FakeChatModel([REPLY]), tts=tts
    )
    assert len(result.turns) == 1
    turn = result.turns[0]
    assert word_error_rate(sample.text, turn.user_text) <= 0.15
    assert turn.reply_text == REPLY and not turn.interrupted
    assert 2.0 < turn.speech_end <= 2.95  # within the 2.9 s clip, after most of the sentence
    spoken = result.output.slice(turn.audio_out_first, turn.audio_out_end)
    heard = await stt.transcribe(spoken)
    assert word_error_rate(REPLY, heard.text) <= 0.1


async def test_real_barge_in_cuts_the_spoken_reply_and_the_history_keeps_what_was_heard(engines) -> None:
    stt, tts = engines
    question = clip("hello_world")
    interruption = Audio.from_path(clip("counting").path)  # "one two three ..."
    result = await simulate(
        Audio.from_path(question.path),
        vad=make_vad("silero"),
        stt=stt,
        llm=FakeChatModel([LONG_REPLY, "Okay."]),
        tts=tts,
        barge_in=BargeIn(interruption, at=1.5, after_reply_start=True),  # 1.5 s into the ~10 s reply
    )
    first = result.turns[0]
    assert first.interrupted
    assert first.playback_stopped - first.barge_in_detected < 0.1
    assert LONG_REPLY.startswith(first.reply_text) and first.reply_text != LONG_REPLY
    history = [(m.role, m.text) for m in result.session.conversation.messages()][1:]
    assert history[0] == ("user", first.user_text)
    if first.reply_text:
        assert history[1] == ("assistant", first.reply_text)
    assert (
        word_error_rate("one two three four five six seven eight nine ten", result.turns[1].user_text) <= 0.2
    )
    # what the history keeps is what the speaker really played before it stopped
    assert first.reply_text, "1.5 s of the reply were played"
    played = result.output.slice(first.audio_out_first, first.playback_stopped)
    heard = await stt.transcribe(played)
    assert abs(len(heard.text.split()) - len(first.reply_text.split())) <= 2
