"""End to end: generated PDFs -> offline MiniLM default -> index -> search; resumability and bad inputs."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from polymodal.backends.embedding import FloatMatrix
from polymodal.backends.sentence import MiniLMDenseEmbedder, MiniLMTokenEmbedder
from polymodal.errors import ConfigError
from polymodal.index import Manifest
from polymodal.media.limits import Limits
from polymodal.pipelines.retrieval import RetrievalIndex, ingest, search
from tests.pipelines.retrieval_fixtures import (
    CORPUS,
    HashingEmbedder,
    write_broken_files,
    write_corpus,
    write_pdf,
)

TOTAL_PAGES = sum(len(pages) for pages in CORPUS.values())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One index over the corpus, built once: (documents folder, index folder)."""
    import torch

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("retrieval")
    docs = write_corpus(root / "docs")
    summary = ingest([docs], root / "index")
    assert summary.pages_embedded == TOTAL_PAGES
    assert not summary.failed
    return docs, root / "index"


@pytest.mark.slow
def test_search_finds_the_page_that_answers(built: tuple[Path, Path]) -> None:
    _, index = built
    hits = search("how is sourdough bread leavened?", index, k=3)
    assert (hits[0].document, hits[0].page) == ("bakery.pdf", 2)
    assert hits[0].thumbnail is not None and Path(hits[0].thumbnail).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hits = search("largest planet storm", index, k=3)
    assert (hits[0].document, hits[0].page) == ("astronomy.pdf", 2)
    hits = search("gas pressure makes the eruption start", index, k=1)
    assert (hits[0].document, hits[0].page) == ("volcanoes.pdf", 2)


@pytest.mark.slow
def test_search_filter_restricts_to_a_document(built: tuple[Path, Path]) -> None:
    _, index = built
    hits = search("sourdough bread", index, k=5, filter={"document": "volcanoes.pdf"})
    assert hits and {h.document for h in hits} == {"volcanoes.pdf"}
    hits = search("telescope", index, k=5, filter={"page": 1})
    assert {h.page for h in hits} == {1}


@pytest.mark.slow
def test_index_remembers_its_model_and_refuses_another(built: tuple[Path, Path]) -> None:
    _, index = built
    with RetrievalIndex(index, create=False) as opened:
        assert opened.config.model == "minilm" and not opened.config.hybrid
        assert opened.config.embedder_id.startswith("minilm-tokens")
    with pytest.raises(ConfigError, match="built with minilm"):
        RetrievalIndex(index, "minilm-dense", create=False)


def test_rerun_embeds_nothing_then_replaces_changed_and_syncs_deleted(tmp_path: Path) -> None:
    docs = write_corpus(tmp_path / "docs")
    embedder = HashingEmbedder()
    first = ingest([docs], tmp_path / "index", embedder, hybrid=True)
    assert embedder.pages_embedded == TOTAL_PAGES == first.pages_embedded

    again = ingest([docs], tmp_path / "index", embedder)
    assert embedder.pages_embedded == TOTAL_PAGES  # zero embedding calls for unchanged files
    assert again.unchanged == len(CORPUS) and again.pages_skipped == TOTAL_PAGES

    write_pdf(docs / "bakery.pdf", ["The bakery now also sells gluten-free rye crackers."])
    changed = ingest([docs], tmp_path / "index", embedder)
    assert changed.pages_embedded == 1 and embedder.pages_embedded == TOTAL_PAGES + 1
    with RetrievalIndex(tmp_path / "index", embedder, create=False) as opened:
        assert len(opened.vectors) == TOTAL_PAGES - 2 + 1  # both old bakery pages replaced by one
        hits = opened.search("gluten free crackers", 1)
        assert (hits[0].document, hits[0].page) == ("bakery.pdf", 1)
        assert all(h.document != "bakery.pdf" or h.page == 1 for h in opened.search("sourdough", 10))

    (docs / "astronomy.pdf").unlink()
    kept = ingest([docs], tmp_path / "index", embedder)
    assert not kept.removed  # without --sync nothing is removed
    synced = ingest([docs], tmp_path / "index", embedder, sync=True)
    assert [Path(p).name for p in synced.removed] == ["astronomy.pdf"]
    with RetrievalIndex(tmp_path / "index", embedder, create=False) as opened:
        assert len(opened.vectors) == len(opened.pages) == 3 + 1
        assert all(h.document != "astronomy.pdf" for h in opened.search("telescope", 10))
        assert opened.manifest.done_ids() == opened.vectors.ids()
        assert len(list(opened.thumbnails.glob("*.png"))) == 4


def test_corrupt_encrypted_and_oversized_files_are_recorded_and_skipped(tmp_path: Path) -> None:
    docs = write_corpus(tmp_path / "docs")
    expected = write_broken_files(docs)
    embedder = HashingEmbedder()
    summary = ingest([docs], tmp_path / "index", embedder, limits=Limits(max_bytes=500_000))
    assert summary.pages_embedded == TOTAL_PAGES
    failed = {f.document: f.reason for f in summary.failed}
    assert set(failed) == set(expected)
    for name, word in expected.items():
        assert word in failed[name].lower()
    with Manifest(tmp_path / "index" / "manifest.sqlite") as manifest:
        records = {Path(r.document).name: r for r in manifest.documents()}
    assert all(records[name].status == "failed" and records[name].reason for name in expected)
    assert all(records[name].done == len(pages) for name, pages in CORPUS.items())


@pytest.mark.slow
def test_scanned_pages_are_read_with_ocr(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    # An image-only page: no text layer, so the embedder must fall back to OCR.
    from PIL import Image as PILImage

    PILImage.new("RGB", (400, 300), "white").save(docs / "scan.png")
    seen: list[str] = []

    def fake_ocr(image: object) -> str:
        seen.append(str(getattr(image, "name", "")))
        return "Invoice from the lighthouse keeper for twelve lamp wicks."

    embedder = MiniLMDenseEmbedder(ocr=fake_ocr)
    ingest(
        [docs, *sorted(write_corpus(tmp_path / "more").iterdir())], tmp_path / "index", embedder, hybrid=True
    )
    assert len(seen) == 1
    hits = search("lighthouse lamp wicks", tmp_path / "index", embedder, k=1)
    assert (hits[0].document, hits[0].page) == ("scan.png", 1)


@pytest.mark.slow
def test_default_model_rerun_embeds_nothing(
    built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs, index = built
    calls: list[int] = []
    original = MiniLMTokenEmbedder.embed_page_texts

    def counting(self: MiniLMTokenEmbedder, texts: Sequence[str]) -> list[FloatMatrix]:
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(MiniLMTokenEmbedder, "embed_page_texts", counting)
    summary = ingest([docs], index)
    assert calls == [] and summary.pages_embedded == 0 and summary.unchanged == len(CORPUS)


def test_search_on_a_missing_index_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a polymodal index"):
        search("anything", tmp_path / "nothing-here")


@pytest.mark.slow
def test_copied_index_keeps_working(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, index = built
    copy = tmp_path / "copy"
    shutil.copytree(index, copy)
    hits = search("croissants opening hours", copy, k=1)
    assert (hits[0].document, hits[0].page) == ("bakery.pdf", 1)
