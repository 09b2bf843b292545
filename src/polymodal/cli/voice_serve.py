"""``polymodal voice serve``: the voice WebSocket endpoint and its browser page, on uvicorn."""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from polymodal.config import Settings, get_settings
from polymodal.errors import ConfigError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from polymodal.server.voice_ws import SessionRunner, VoiceServerLimits


class Engine(StrEnum):
    """Which voice path the server runs per session."""

    OFFLINE = "offline"
    REALTIME = "realtime"


#: Where the voice core exposes the offline cascade (VAD -> STT -> LLM -> TTS) as a loop builder:
#: ``offline_loop_builder(settings) -> (build(sink, observer) -> VoiceLoop, tts_sample_rate)``.
OFFLINE_BUILDER = "polymodal.pipelines.voice.defaults:offline_loop_builder"


def _offline_runner(settings: Settings) -> SessionRunner:
    from polymodal.server.voice_bridge import loop_runner

    module_name, _, attr = OFFLINE_BUILDER.partition(":")
    try:
        factory: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"the offline voice stack is not available ({exc})",
            hint="install polymodal[voice] or run with --engine realtime",
        ) from exc
    build, output_rate = factory(settings)
    return loop_runner(build, output_rate=int(output_rate))


def _realtime_runner(settings: Settings, model: str, voice: str, instructions: str | None) -> SessionRunner:
    from polymodal.backends import openai_realtime
    from polymodal.server.voice_bridge import realtime_runner

    extra: dict[str, Any] = {"voice": voice, "turn_detection": "server_vad"}
    if instructions:
        extra["instructions"] = instructions
    return realtime_runner(openai_realtime.create(settings, model, **extra))


def build_app(
    settings: Settings,
    engine: Engine,
    limits: VoiceServerLimits,
    *,
    model: str = "gpt-realtime",
    voice: str = "marin",
    instructions: str | None = None,
) -> FastAPI:
    """The voice app for ``engine`` (the realtime path takes 24 kHz input; the offline loop 16 kHz)."""
    from dataclasses import replace

    from polymodal.server.voice_ws import create_voice_app

    if engine is Engine.REALTIME:
        runner = _realtime_runner(settings, model, voice, instructions)
        limits = replace(limits, sample_rate=24_000)
    else:
        runner = _offline_runner(settings)
    return create_voice_app(settings, runner, limits)


_ENGINE_OPTION = typer.Option(Engine.OFFLINE, help="offline cascade, or OpenAI Realtime (needs a key).")


def register(voice_app: typer.Typer) -> None:
    """Add ``serve`` to the ``voice`` command group."""

    @voice_app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 to expose it)."),
        port: int = typer.Option(8765, help="TCP port."),
        engine: Engine = _ENGINE_OPTION,
        max_sessions: int = typer.Option(8, min=1, help="Concurrent sessions; more are refused (1013)."),
        idle_timeout: float = typer.Option(
            30.0, min=1.0, help="Seconds without input before a session closes."
        ),
        max_frame_kb: int = typer.Option(
            64, min=1, help="Largest inbound WebSocket frame, in KiB (1009 above)."
        ),
        model: str = typer.Option("gpt-realtime", help="Realtime model (with --engine realtime)."),
        voice: str = typer.Option("marin", help="Realtime output voice (with --engine realtime)."),
        instructions: str | None = typer.Option(None, help="System prompt for the realtime model."),
    ) -> None:
        """Serve the voice page at http://HOST:PORT/voice: microphone in, spoken replies, live transcript."""
        import uvicorn

        from polymodal.server.voice_ws import VoiceServerLimits

        limits = VoiceServerLimits(
            max_sessions=max_sessions, idle_timeout=idle_timeout, max_frame_bytes=max_frame_kb * 1024
        )
        app = build_app(get_settings(), engine, limits, model=model, voice=voice, instructions=instructions)
        typer.echo(f"voice page: http://{host}:{port}/voice  (engine: {engine.value})")
        uvicorn.run(
            app,
            host=host,
            port=port,
            ws_max_size=limits.max_frame_bytes
            + 1024,  # the app closes oversized frames itself, with a reason
            ws_ping_interval=20.0,
            log_level="warning",
        )


__all__ = ["Engine", "build_app", "register"]
