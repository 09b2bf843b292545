"""The voice loop end to end with deterministic engines, in real time: trace, turn-taking, barge-in, echo."""

from __future__ import annotations

import pytest

from polymodal.backends.testing import FakeChatModel
from polymodal.pipelines.voice.fakes import EnergyVAD, ScriptedSTT, ToneTTS
from polymodal.pipelines.voice.loop import VoiceLoopConfig
from polymodal.pipelines.voice.simulate import BargeIn, EchoPath, simulate
from polymodal.pipelines.voice.turns import TurnTakingConfig
from tests.pipelines.voice.conftest import noise_burst, utterance

REPLY = "Sure thing. The weather today is sunny with a light breeze from the west. Enjoy your afternoon."
STAGES = [
    "speech_end",
    "turn_end",
    "transcript_final",
    "llm_first_token",
    "tts_first_audio",
    "audio_out_first",
]


async def test_one_turn_produces_a_complete_ordered_trace_and_history(rms_after) -> None:
    llm = FakeChatModel([REPLY])
    result = await simulate(
        utterance(0.3, 0.8, 0.2),
        vad=EnergyVAD(),
        stt=ScriptedSTT(["what is the weather like"]),
        llm=llm,
        tts=ToneTTS(seconds_per_char=0.01),
    )
    assert len(result.turns) == 1
    turn = result.turns[0]
    assert turn.user_text == "what is the weather like"
    assert turn.reply_text == REPLY and not turn.interrupted
    times = [getattr(turn, stage) for stage in STAGES]
    assert all(t is not None for t in times) and times == sorted(times)
    assert turn.speech_end == pytest.approx(1.1, abs=0.04)  # the burst ends at 1.1 s
    assert turn.turn_end - turn.speech_end == pytest.approx(0.7, abs=0.05)  # end-of-turn silence
    assert turn.audio_out_first - turn.turn_end < 0.05  # fakes are instant: the loop itself adds little
    record = turn.as_record()
    assert {"user_text", "reply_text", *STAGES} <= record.keys()
    assert record["latency"]["voice_to_voice"] == pytest.approx(
        turn.audio_out_first - turn.speech_end, abs=1e-3
    )
    # the speaker really played the reply from audio_out_first on
    assert rms_after(result.output, turn.audio_out_first + 0.01, turn.audio_out_first + 0.3) > 0.1
    assert rms_after(result.output, 0.0, turn.audio_out_first - 0.01) == 0.0
    history = [(m.role, m.text) for m in result.session.conversation.messages()]
    assert history[1:] == [("user", "what is the weather like"), ("assistant", REPLY)]
    assert llm.calls[0].messages[-1].text == "what is the weather like"


async def test_barge_in_stops_playback_and_the_llm_within_100_ms_and_truncates_history(rms_after) -> None:
    # the LLM streams slowly, so it is still writing when the user interrupts
    llm = FakeChatModel([REPLY, "Okay."], token_delay=0.08)
    result = await simulate(
        utterance(0.2, 0.6, 2.6),
        vad=EnergyVAD(),
        stt=ScriptedSTT(["tell me about the weather", "stop please"]),
        llm=llm,
        tts=ToneTTS(seconds_per_char=0.05),
        barge_in=BargeIn(noise_burst(0.5, seed=1), at=2.2),
    )
    first, second = result.turns
    assert first.interrupted and first.barge_in_detected is not None
    detected = first.barge_in_detected
    assert detected == pytest.approx(2.2 + 0.096, abs=0.06)  # needs 96 ms of speech to confirm
    assert first.playback_stopped - detected < 0.1
    assert first.llm_stopped is not None and first.llm_stopped - detected < 0.1
    assert first.generated_text != REPLY  # generation really stopped early
    # what was heard is a strict prefix of the reply, and that is what the history keeps
    assert first.reply_text and REPLY.startswith(first.reply_text) and first.reply_text != REPLY
    history = [(m.role, m.text) for m in result.session.conversation.messages()][1:]
    assert history == [
        ("user", "tell me about the weather"),
        ("assistant", first.reply_text),
        ("user", "stop please"),
        ("assistant", "Okay."),
    ]
    # the speaker went silent within 100 ms of detection and stayed so until the next reply
    assert rms_after(result.output, detected + 0.1, second.audio_out_first - 0.01) == 0.0
    assert second.reply_text == "Okay." and not second.interrupted


async def test_the_agents_own_echo_does_not_interrupt_it_but_the_user_still_can() -> None:
    config = VoiceLoopConfig(turn_taking=TurnTakingConfig(echo_cancel=True))
    echo = EchoPath(gain=0.5, delay_s=0.07)
    calm = await simulate(
        utterance(0.2, 0.5, 1.8),
        vad=EnergyVAD(),
        stt=ScriptedSTT(["hello"]),
        llm=FakeChatModel([REPLY]),
        tts=ToneTTS(seconds_per_char=0.015),
        config=config,
        echo=echo,
    )
    assert [t.interrupted for t in calm.turns] == [False]
    assert calm.turns[0].reply_text == REPLY
    barged = await simulate(
        utterance(0.2, 0.5, 1.2),
        vad=EnergyVAD(),
        stt=ScriptedSTT(["hello", "wait"]),
        llm=FakeChatModel([REPLY, "Yes?"]),
        tts=ToneTTS(seconds_per_char=0.015),
        config=config,
        echo=echo,
        barge_in=BargeIn(noise_burst(0.5, seed=2), at=1.8),
    )
    assert barged.turns[0].interrupted
    assert barged.turns[0].playback_stopped - barged.turns[0].barge_in_detected < 0.1


async def test_without_echo_cancellation_the_echo_interrupts_the_agent() -> None:
    """The control for the test above: the simulated echo is strong enough to fool the VAD."""
    config = VoiceLoopConfig(turn_taking=TurnTakingConfig(echo_cancel=False))
    result = await simulate(
        utterance(0.2, 0.5, 2.0),
        vad=EnergyVAD(),
        stt=ScriptedSTT(["hello"]),
        llm=FakeChatModel([REPLY], default="again"),
        tts=ToneTTS(seconds_per_char=0.03),
        config=config,
        echo=EchoPath(gain=0.5, delay_s=0.07),
    )
    assert result.turns[0].interrupted


async def test_short_noises_are_not_turns_and_pauses_do_not_split_a_turn() -> None:
    from polymodal.media.audio import Audio

    rate = 16000
    audio = Audio.concatenate(
        [
            Audio.silence(0.3, rate),
            noise_burst(0.1),  # a click: below min_turn_speech_s
            Audio.silence(1.0, rate),
            noise_burst(0.5, seed=3),
            Audio.silence(0.4, rate),  # a pause shorter than end_of_turn_s
            noise_burst(0.5, seed=4),
            Audio.silence(0.3, rate),
        ]
    )
    stt = ScriptedSTT(["cough", "first half", "second half"])  # the click is transcribed, then discarded
    llm = FakeChatModel(["Got it."])
    result = await simulate(audio, vad=EnergyVAD(), stt=stt, llm=llm, tts=ToneTTS(seconds_per_char=0.01))
    assert [t.user_text for t in result.turns] == ["first half second half"]
    assert len(llm.calls) == 1
    assert result.turns[0].speech_end == pytest.approx(0.3 + 0.1 + 1.0 + 0.5 + 0.4 + 0.5, abs=0.04)
