"""``polymodal voice``: run the voice loop on a recording (``simulate``); ``serve`` comes from voice_serve."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from polymodal.pipelines.voice.loop import VoiceLoopConfig
from polymodal.pipelines.voice.simulate import EchoPath, simulate_files
from polymodal.pipelines.voice.stack import DEFAULT_LLM, offline_components
from polymodal.pipelines.voice.turns import TurnTakingConfig

voice_app = typer.Typer(
    name="voice",
    help="Voice agent: VAD -> STT -> LLM -> TTS with barge-in and a latency trace.",
    no_args_is_help=True,
)


@voice_app.command("simulate")
def simulate_command(
    input_wav: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The user's side (any audio).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the agent's audio (WAV).")],
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Per-turn latency trace (JSON lines).")
    ] = None,
    barge_in_wav: Annotated[
        Path | None,
        typer.Option("--barge-in-wav", exists=True, dir_okay=False, help="Speech mixed in to interrupt."),
    ] = None,
    barge_in_at: Annotated[
        float, typer.Option("--barge-in-at", help="Seconds into the input to mix it.")
    ] = 0.0,
    barge_in_after_reply: Annotated[
        bool, typer.Option("--barge-in-after-reply", help="Count --barge-in-at from the first reply's start.")
    ] = False,
    echo_gain: Annotated[float, typer.Option("--echo-gain", help="Agent audio fed back to the mic.")] = 0.0,
    echo_delay_ms: Annotated[float, typer.Option("--echo-delay-ms", help="Delay of that echo.")] = 60.0,
    llm: Annotated[str, typer.Option("--llm", help="Chat model id for the replies.")] = DEFAULT_LLM,
    stt: Annotated[str, typer.Option("--stt", help="whisper or pocketsphinx.")] = "whisper",
    tts: Annotated[str, typer.Option("--tts", help="auto (piper, else flite), piper or flite.")] = "auto",
    vad: Annotated[str, typer.Option("--vad", help="silero or webrtc.")] = "silero",
    system_prompt: Annotated[str | None, typer.Option("--system-prompt", help="LLM instructions.")] = None,
    end_of_turn_ms: Annotated[float, typer.Option("--end-of-turn-ms", help="Silence ending a turn.")] = 700.0,
    min_speech_ms: Annotated[
        float, typer.Option("--min-speech-ms", help="Shorter turns are ignored.")
    ] = 250.0,
    partials: Annotated[bool, typer.Option("--partials/--no-partials", help="Interim transcripts.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print turns and summary as JSON.")] = False,
    warm_up: Annotated[
        bool, typer.Option("--warm-up/--no-warm-up", help="Load the models before the clock starts.")
    ] = True,
) -> None:
    """Play IN through the voice loop in real time; write the agent's audio and the latency trace."""
    turn_taking = TurnTakingConfig(
        end_of_turn_s=end_of_turn_ms / 1000, min_turn_speech_s=min_speech_ms / 1000
    )
    config = VoiceLoopConfig(turn_taking=turn_taking, partials=partials)
    if system_prompt is not None:
        config = VoiceLoopConfig(turn_taking=turn_taking, partials=partials, system_prompt=system_prompt)
    components = offline_components(vad=vad, stt=stt, llm=llm, tts=tts)
    result = asyncio.run(
        simulate_files(
            input_wav,
            components=components,
            out_path=out,
            trace_path=trace,
            config=config,
            barge_in_path=barge_in_wav,
            barge_in_at=barge_in_at,
            barge_in_after_reply=barge_in_after_reply,
            echo=EchoPath(gain=echo_gain, delay_s=echo_delay_ms / 1000) if echo_gain > 0 else None,
            warm=warm_up,
        )
    )
    if as_json:
        typer.echo(
            json.dumps(
                {"turns": [t.as_record() for t in result.turns], "summary": result.summary()}, indent=2
            )
        )
        return
    for turn in result.turns:
        cut = " [interrupted]" if turn.interrupted else ""
        typer.echo(f"turn {turn.turn}: user: {turn.user_text!r}")
        typer.echo(f"        agent{cut}: {turn.reply_text!r}")
    typer.echo(result.summary_table())
    typer.echo(f"agent audio: {out}" + (f"  trace: {trace}" if trace else ""))


def _register_serve() -> None:
    from polymodal.cli import voice_serve

    voice_serve.register(voice_app)


_register_serve()

__all__ = ["voice_app"]
