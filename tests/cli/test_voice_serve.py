"""``polymodal voice serve``: app building per engine, and the command's registration."""

from __future__ import annotations

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from polymodal.cli import voice_serve
from polymodal.cli.voice_serve import Engine, build_app, register
from polymodal.config import Settings
from polymodal.errors import ConfigError
from polymodal.server.voice_ws import VoiceServerLimits

BUILT: list[Settings] = []


def fake_offline_builder(settings: Settings) -> tuple[object, int]:
    BUILT.append(settings)
    return (lambda sink, observer: None), 22050


def test_realtime_engine_serves_a_24khz_page() -> None:
    app = build_app(Settings(openai_api_key="sk-x"), Engine.REALTIME, VoiceServerLimits())
    page = TestClient(app).get("/voice")
    assert page.status_code == 200
    assert 'Number("24000")' in page.text and "__SAMPLE_RATE__" not in page.text
    assert app.state.voice_endpoint.limits.sample_rate == 24000


def test_realtime_engine_without_a_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_app(Settings(openai_api_key=None), Engine.REALTIME, VoiceServerLimits())


def test_offline_engine_uses_the_voice_core_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_serve, "OFFLINE_BUILDER", f"{__name__}:fake_offline_builder")
    settings = Settings()
    app = build_app(settings, Engine.OFFLINE, VoiceServerLimits(max_sessions=3))
    assert BUILT[-1] is settings
    assert app.state.voice_endpoint.limits.max_sessions == 3
    assert 'Number("16000")' in TestClient(app).get("/voice").text


def test_offline_engine_missing_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(voice_serve, "OFFLINE_BUILDER", "polymodal.no_such_module:builder")
    with pytest.raises(ConfigError, match="--engine realtime"):
        build_app(Settings(), Engine.OFFLINE, VoiceServerLimits())


def test_register_adds_the_serve_command() -> None:
    group = typer.Typer()
    register(group)

    @group.command("other")
    def other() -> None:
        """Keep the group a group."""

    result = CliRunner().invoke(group, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--engine", "--max-sessions", "--idle-timeout", "--max-frame-kb", "--port"):
        assert option in result.output
