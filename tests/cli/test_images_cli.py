from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from polymodal.cli.images import images_app
from tests.pipelines.crossmodal_fixtures import BAD, GOOD, PixelEmbedder, make_library

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(images_app, name="images")
    return app


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    make_library(root)
    return root


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "polymodal.pipelines.crossmodal.load_dense_embedder",
        lambda model_id: PixelEmbedder() if model_id == "fake:pixels-4x4" else pytest.fail(model_id),
    )


def test_index_search_dedup_classify_end_to_end(tmp_path: Path, photos: Path, fake_model: None) -> None:
    idx = str(tmp_path / "idx")
    result = runner.invoke(
        _app(), ["images", "index", str(photos), "--index", idx, "--model", "fake:pixels-4x4", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["indexed"] == len(GOOD)
    assert {Path(f["path"]).name for f in summary["failed"]} == set(BAD)

    # search with text; the model comes from the index when --model is omitted
    result = runner.invoke(_app(), ["images", "search", "red", "--index", idx, "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [set(h) >= {"path", "score"} for h in hits] == [True, True]
    assert {Path(h["path"]).name for h in hits} == {"red1.png", "red2.jpg"}
    assert hits[0]["score"] >= hits[1]["score"]

    # search with an image, writing a gallery
    gallery = tmp_path / "out" / "hits.html"
    query = photos / "album" / "nested" / "blue1.webp"
    result = runner.invoke(
        _app(),
        [
            "images",
            "search",
            "--image",
            str(query),
            "--index",
            idx,
            "-k",
            "3",
            "--json",
            "--html",
            str(gallery),
        ],
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert Path(hits[0]["path"]).name == "blue1.webp" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    page = gallery.read_text()
    assert page.count("data:image/jpeg;base64,") == 3 and "blue1.webp" in page

    result = runner.invoke(_app(), ["images", "dedup", "--index", idx, "--threshold", "0.97", "--json"])
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)
    assert {"blue1.webp", "blue1_copy.jpg"} in [{Path(p).name for p in g["paths"]} for g in groups]

    result = runner.invoke(
        _app(),
        [
            "images",
            "classify",
            "--labels",
            "red,green,blue,yellow",
            "--index",
            idx,
            "--json",
            "--html",
            str(tmp_path / "labels.html"),
        ],
    )
    assert result.exit_code == 0, result.output
    labels = {Path(r["path"]).name: r["label"] for r in json.loads(result.stdout)}
    assert labels["red1.png"] == "red" and labels["green1.png"] == "green"
    assert (tmp_path / "labels.html").is_file()

    # human output: a table, and the skipped files on stderr
    result = runner.invoke(_app(), ["images", "search", "yellow", "--index", idx])
    assert result.exit_code == 0 and "yellow_cmyk.jpg" in result.stdout


def test_reindex_and_errors(tmp_path: Path, photos: Path, fake_model: None) -> None:
    idx = str(tmp_path / "idx")
    assert (
        runner.invoke(
            _app(),
            ["images", "index", str(photos / "red1.png"), "--index", idx, "--model", "fake:pixels-4x4"],
        ).exit_code
        == 0
    )
    result = runner.invoke(_app(), ["images", "reindex", "--index", idx, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["indexed"] == 1
    # neither text nor image; both
    assert runner.invoke(_app(), ["images", "search", "--index", idx]).exit_code == 2
    assert (
        runner.invoke(
            _app(), ["images", "search", "x", "--image", str(photos / "red1.png"), "--index", idx]
        ).exit_code
        == 2
    )
    # a missing index is a clear error, not a traceback
    result = runner.invoke(_app(), ["images", "search", "red", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and "not an image index" in " ".join(result.output.split())
    result = runner.invoke(
        _app(), ["images", "classify", "--labels", "a", "--template", "no slot", "--index", idx]
    )
    assert result.exit_code == 2


@pytest.mark.slow
def test_a_real_transformers_checkpoint_through_the_cli(tmp_path: Path, photos: Path) -> None:
    pytest.importorskip("transformers")
    from tests.backends.tiny_clip import tiny_checkpoint

    checkpoint = tiny_checkpoint("siglip")
    idx = str(tmp_path / "idx")
    result = runner.invoke(
        _app(),
        [
            "images",
            "index",
            str(photos / "album"),
            "--index",
            idx,
            "--model",
            f"siglip:{checkpoint}",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["indexed"] == 3 and [Path(f["path"]).name for f in summary["failed"]] == ["bomb.png"]
    for query in (["un chat", "-k", "2"], ["--image", str(photos / "red1.png"), "-k", "5"]):
        result = runner.invoke(_app(), ["images", "search", *query, "--index", idx, "--json"])
        assert result.exit_code == 0, result.output
        hits = json.loads(result.stdout)
        assert len(hits) == min(3, int(query[-1]))
        assert all(-1.0 <= h["score"] <= 1.0 and Path(h["path"]).is_file() for h in hits)
    # another model on this index is refused with a clear message
    other = tiny_checkpoint("clip")
    result = runner.invoke(_app(), ["images", "search", "x", "--index", idx, "--model", f"clip:{other}"])
    assert result.exit_code == 1 and "was built with siglip:" in " ".join(result.output.split())
