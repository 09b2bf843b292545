from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from polymodal.backends.testing import FakeChatModel
from polymodal.cli import voice as voice_cli
from polymodal.media.audio import Audio
from polymodal.pipelines.voice.fakes import EnergyVAD, ScriptedSTT, ToneTTS
from polymodal.pipelines.voice.stack import VoiceComponents
from tests.pipelines.voice.conftest import noise_burst, utterance

REQUIRED = {
    "user_text",
    "reply_text",
    "speech_end",
    "transcript_final",
    "llm_first_token",
    "tts_first_audio",
    "audio_out_first",
}


def app() -> typer.Typer:
    root = typer.Typer()
    root.add_typer(voice_cli.voice_app, name="voice")
    return root


def fake_components(calls: list[dict]) -> object:
    def build(**names: str) -> VoiceComponents:
        calls.append(names)
        return VoiceComponents(
            vad=EnergyVAD(),
            stt=ScriptedSTT(["hello there", "stop"]),
            llm=FakeChatModel(["Hi! Nice to meet you. What shall we talk about today?", "Sure."]),
            tts=ToneTTS(seconds_per_char=0.03),
        )

    return build


def test_simulate_writes_the_agent_audio_and_a_trace_line_per_turn(tmp_path, monkeypatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(voice_cli, "offline_components", fake_components(calls))
    user = utterance(0.2, 0.6, 1.0).save(tmp_path / "in.wav")
    interrupt = noise_burst(0.5, seed=5).save(tmp_path / "stop.wav")
    out, trace = tmp_path / "out.wav", tmp_path / "trace.jsonl"
    result = CliRunner().invoke(
        app(),
        [
            "voice",
            "simulate",
            str(user),
            "--out",
            str(out),
            "--trace",
            str(trace),
            "--barge-in-wav",
            str(interrupt),
            "--barge-in-at",
            "0.5",
            "--barge-in-after-reply",
            "--llm",
            "fake:x",
            "--tts",
            "flite",
            "--end-of-turn-ms",
            "500",
            "--no-warm-up",  # the scripted fakes would spend a reply on it
        ],
    )
    assert result.exit_code == 0, result.output
    assert calls == [{"vad": "silero", "stt": "whisper", "llm": "fake:x", "tts": "flite"}]
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(lines) == 2 and all(line.keys() >= REQUIRED for line in lines)
    assert lines[0]["user_text"] == "hello there" and lines[0]["interrupted"] is True
    assert lines[0]["latency"]["barge_in_stop"] < 0.1
    assert lines[1]["reply_text"] == "Sure."
    assert lines[0]["turn_end"] - lines[0]["speech_end"] < 0.6  # --end-of-turn-ms took effect
    written = Audio.from_path(out)
    assert written.sample_rate == 16000 and written.duration > 2.0
    assert "voice_to_voice" in result.output and "[interrupted]" in result.output


def test_simulate_json_output_and_missing_input(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(voice_cli, "offline_components", fake_components([]))
    user = utterance(0.2, 0.5, 1.0).save(tmp_path / "in.wav")
    result = CliRunner().invoke(
        app(), ["voice", "simulate", str(user), "--out", str(tmp_path / "o.wav"), "--json", "--no-warm-up"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["turns"][0]["user_text"] == "hello there"
    assert payload["summary"]["voice_to_voice"]["n"] == 1
    missing = CliRunner().invoke(app(), ["voice", "simulate", str(tmp_path / "nope.wav"), "--out", "x.wav"])
    assert missing.exit_code != 0
