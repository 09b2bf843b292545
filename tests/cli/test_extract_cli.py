import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from polymodal.backends import registry
from polymodal.backends.base import Capabilities
from polymodal.backends.testing import FakeChatModel
from polymodal.cli.app import app
from polymodal.samples import synthetic


@pytest.fixture
def scripted_provider(monkeypatch):
    """`scripted:NAME` answers every call with the label of synthetic receipt 3."""
    fake = FakeChatModel(default=synthetic.receipt(3).label, capabilities=Capabilities(structured="grammar"))
    monkeypatch.setitem(registry.BUILTIN_CHAT_PROVIDERS, "scripted", lambda spec, settings: fake)
    return fake


def test_json_records_and_exit_codes(tmp_path, scripted_provider):
    good = tmp_path / "receipt.png"
    good.write_bytes(synthetic.receipt(3).png)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    runner = CliRunner()
    args = [
        "extract",
        str(good),
        "--schema",
        "receipt",
        "--model",
        "scripted:x",
        "--json",
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[0])
    assert record["status"] == "accepted" and record["data"]["total"] == synthetic.receipt(3).label["total"]
    assert {"source", "status", "data", "errors", "attempts"} <= set(record)

    result = runner.invoke(app, [*args[:2], str(bad), *args[2:]])
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(records) == 2
    rejected = next(r for r in records if r["status"] == "rejected")
    assert rejected["data"] is None and "truncated.jpg" in rejected["errors"][0]


def test_usage_errors_exit_2_without_traceback(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(synthetic.receipt(1).png)
    for extra in (["--schema", "nonsense"], ["--schema", "receipt", "--model", "nosuchprovider:m"]):
        proc = subprocess.run(
            [sys.executable, "-m", "polymodal", "extract", str(path), *extra, "--out", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    missing = subprocess.run(
        [sys.executable, "-m", "polymodal", "extract", "--schema", "receipt"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2


def test_bad_input_never_prints_a_traceback(tmp_path):
    bomb = tmp_path / "empty.pdf"
    bomb.write_bytes(b"")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "polymodal",
            "extract",
            str(bomb),
            "--schema",
            "receipt",
            "--json",
            "--model",
            "fake:none",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "rejected" and "empty.pdf" in record["errors"][0]
