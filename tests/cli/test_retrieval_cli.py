"""The retrieval CLI on a fresh Typer app: index, search --json/--filter/--explain, ask, eval retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from polymodal.backends.testing import FakeChatModel
from polymodal.cli.retrieval import eval_app, parse_filters, register
from polymodal.pipelines._retrieval_models import RetrieverChoice
from tests.pipelines.retrieval_fixtures import CORPUS, HashingEmbedder, write_broken_files, write_corpus

TOTAL_PAGES = sum(len(pages) for pages in CORPUS.values())


@pytest.fixture
def app() -> typer.Typer:
    application = typer.Typer()
    register(application)
    application.add_typer(eval_app, name="eval")
    return application


@pytest.fixture
def fast_model(monkeypatch: pytest.MonkeyPatch) -> HashingEmbedder:
    """Stand the hashing embedder in for the default model id (the CLI's wiring is what is tested here)."""
    embedder = HashingEmbedder()

    def load(model_id: str | None = None, **options: object) -> RetrieverChoice:
        return RetrieverChoice(model_id or "minilm", embedder, True)

    monkeypatch.setattr("polymodal.pipelines.retrieval.load_retriever", load)
    return embedder


def _index(runner: CliRunner, app: typer.Typer, *args: str) -> str:
    result = runner.invoke(app, ["index", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_index_search_json_filter_and_rerun(
    app: typer.Typer, fast_model: HashingEmbedder, tmp_path: Path
) -> None:
    runner = CliRunner()
    docs = write_corpus(tmp_path / "docs")
    index = str(tmp_path / "idx")
    out = _index(runner, app, str(docs), "--index", index)
    assert f"{TOTAL_PAGES} pages embedded" in out and "pages/s" in out

    result = runner.invoke(
        app, ["search", "sourdough bread wild yeast", "--index", index, "-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and (hits[0]["document"], hits[0]["page"]) == ("bakery.pdf", 2)
    assert {"document", "page", "score", "thumbnail"} <= set(hits[0]) and Path(hits[0]["thumbnail"]).exists()

    result = runner.invoke(
        app, ["search", "bread", "--index", index, "--json", "--filter", "document=volcanoes.pdf"]
    )
    assert {hit["document"] for hit in json.loads(result.stdout)} == {"volcanoes.pdf"}

    embedded_before = fast_model.pages_embedded
    out = _index(runner, app, str(docs), "--index", index)
    assert "0 pages embedded" in out and fast_model.pages_embedded == embedded_before

    (docs / "astronomy.pdf").unlink()
    out = _index(runner, app, str(docs), "--index", index, "--sync", "--json")
    assert len(json.loads(out)["removed"]) == 1
    result = runner.invoke(app, ["search", "telescope jupiter", "--index", index, "--json", "-k", "10"])
    assert all(hit["document"] != "astronomy.pdf" for hit in json.loads(result.stdout))


def test_unreadable_files_are_reported_and_the_rest_indexed(
    app: typer.Typer, fast_model: HashingEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polymodal.config import get_settings

    docs = write_corpus(tmp_path / "docs")
    write_broken_files(docs)
    monkeypatch.setenv("POLYMODAL_MAX_BYTES", "500000")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["index", str(docs), "--index", str(tmp_path / "idx")])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert f"{TOTAL_PAGES} pages embedded" in result.output and "3 failed" in result.output
    for name in ("corrupt.pdf", "encrypted.pdf", "oversized.pdf"):
        assert f"skipped {name}" in result.stderr


def test_errors_exit_non_zero_with_a_message(
    app: typer.Typer, fast_model: HashingEmbedder, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["search", "anything", "--index", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "not a polymodal index" in result.stderr

    docs = write_corpus(tmp_path / "docs")
    _index(runner, app, str(docs), "--index", str(tmp_path / "idx"))
    result = runner.invoke(
        app, ["search", "bread", "--index", str(tmp_path / "idx"), "--explain", str(tmp_path / "x.png")]
    )
    assert result.exit_code == 1 and "visual" in result.stderr and not (tmp_path / "x.png").exists()
    result = runner.invoke(app, ["search", "bread", "--index", str(tmp_path / "idx"), "--filter", "nonsense"])
    assert result.exit_code != 0 and "KEY=VALUE" in result.output


def test_ask_prints_a_cited_answer(
    app: typer.Typer, fast_model: HashingEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    docs = write_corpus(tmp_path / "docs")
    index = str(tmp_path / "idx")
    _index(runner, app, str(docs), "--index", index)
    fake = FakeChatModel(
        [
            {
                "answer": "Wild yeast [bakery.pdf p.2] and magic [nowhere.pdf p.1].",
                "citations": [],
                "answerable": True,
            }
        ]
    )
    requested: list[str] = []

    def load_chat_model(model_id: str, settings: object = None) -> FakeChatModel:
        requested.append(model_id)
        return fake

    monkeypatch.setattr("polymodal.backends.registry.load_chat_model", load_chat_model)
    result = runner.invoke(
        app, ["ask", "what leavens sourdough bread", "--index", index, "--model", "fake:x", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert requested == ["fake:x"]
    assert payload["citations"] == [{"document": "bakery.pdf", "page": 2}]
    assert "nowhere.pdf" not in payload["answer"] and payload["answerable"] is True


def test_eval_retrieval_reports_metrics(
    app: typer.Typer, fast_model: HashingEmbedder, tmp_path: Path
) -> None:
    runner = CliRunner()
    docs = write_corpus(tmp_path / "docs")
    index = str(tmp_path / "idx")
    _index(runner, app, str(docs), "--index", index)
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"query": "sourdough bread wild yeast", "document": "bakery.pdf", "page": 2})
        + "\n"
        + json.dumps({"query": "jupiter largest planet storm", "document": "astronomy.pdf", "page": 2})
        + "\n"
    )
    result = runner.invoke(app, ["eval", "retrieval", "--queries", str(queries), "--index", index, "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["queries"] == 2 and metrics["recall_at_10"] == 1.0 and metrics["ndcg_at_5"] > 0.5


def test_parse_filters() -> None:
    assert parse_filters(["document=a.pdf", "page=3"]) == {"document": "a.pdf", "page": 3}
    assert parse_filters(None) is None


@pytest.mark.slow
def test_default_offline_model_end_to_end(app: typer.Typer, tmp_path: Path) -> None:
    import torch

    torch.set_num_threads(2)
    runner = CliRunner()
    docs = write_corpus(tmp_path / "docs")
    index = str(tmp_path / "idx")
    assert f"{TOTAL_PAGES} pages embedded" in _index(runner, app, str(docs), "--index", index)
    result = runner.invoke(
        app, ["search", "Which planet has a huge storm?", "--index", index, "-k", "2", "--json"]
    )
    hits = json.loads(result.stdout)
    assert (hits[0]["document"], hits[0]["page"]) == ("astronomy.pdf", 2)
    assert "0 pages embedded" in _index(runner, app, str(docs), "--index", index)


@pytest.mark.slow
def test_visual_model_index_search_and_explain(app: typer.Typer, tmp_path: Path) -> None:
    """A tiny random ColQwen2 through the CLI: index by model id, search, --explain writes a heat map."""
    pytest.importorskip("transformers")
    import torch

    from tests.backends.test_colpali import build_tiny_colqwen2

    torch.set_num_threads(2)
    model_dir = build_tiny_colqwen2(tmp_path / "tiny-colqwen2")
    docs = write_corpus(tmp_path / "docs", {"bakery.pdf": CORPUS["bakery.pdf"]})
    runner = CliRunner()
    index = str(tmp_path / "idx")
    assert "2 pages embedded" in _index(
        runner, app, str(docs), "--index", index, "--model", f"colqwen2:{model_dir}"
    )
    heat = tmp_path / "heat.png"
    result = runner.invoke(app, ["search", "bread", "--index", index, "--json", "--explain", str(heat)])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert {(h["document"], h["page"]) for h in hits} == {("bakery.pdf", 1), ("bakery.pdf", 2)}
    from PIL import Image as PILImage

    with PILImage.open(heat) as image:
        assert image.format == "PNG" and image.width > 100
