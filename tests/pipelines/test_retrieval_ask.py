"""ask(): pages go to the chat model labelled for citation; only citations of provided pages survive."""

from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.backends.messages import ImagePart
from polymodal.backends.testing import FakeChatModel
from polymodal.pipelines._retrieval_ask import CANNOT_ANSWER, GroundedAnswer, validate_answer
from polymodal.pipelines.retrieval import ask, ingest
from polymodal.pipelines.retrieval import ask_async as ask_async_
from tests.pipelines.retrieval_fixtures import HashingEmbedder, write_corpus


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ask")
    ingest([write_corpus(root / "docs")], root / "index", HashingEmbedder(), hybrid=True)
    return root / "index"


def test_answer_keeps_only_citations_of_retrieved_pages(index: Path) -> None:
    fake = FakeChatModel(
        [
            {
                "answer": "Sourdough rises thanks to wild yeast [bakery.pdf p.2], and lava is hot "
                "[volcanoes.pdf p.3].",
                "citations": ["bakery.pdf p.2", "volcanoes.pdf p.3", "[astronomy.pdf p.9]"],
                "answerable": True,
            }
        ]
    )
    answer = ask("what leavens sourdough bread starter yeast", fake, index, HashingEmbedder(), k=2)
    shown = {(hit.document, hit.page) for hit in answer.pages}
    assert ("bakery.pdf", 2) in shown and ("volcanoes.pdf", 3) not in shown
    assert [(c.document, c.page) for c in answer.citations] == [("bakery.pdf", 2)]
    assert answer.answerable
    assert "[bakery.pdf p.2]" in answer.answer and "volcanoes.pdf" not in answer.answer
    assert "volcanoes.pdf p.3" in answer.dropped_citations

    # What the model saw: an instruction, then every retrieved page as a labelled image with its text.
    (call,) = fake.calls
    assert call.schema is not None and call.schema.name == "GroundedAnswer"
    images = [part for part in call.messages[1].parts if isinstance(part, ImagePart)]
    assert [part.label for part in images] == [f"{h.document} p.{h.page}" for h in answer.pages]
    bakery = next(part for part in images if part.label == "bakery.pdf p.2")
    assert bakery.text_hint is not None and "wild yeast" in bakery.text_hint
    assert bakery.image.width > 300  # re-rendered from the PDF, not the thumbnail
    assert "cite" in call.messages[0].text.lower()


async def test_unanswerable_says_it_cannot_answer(index: Path) -> None:
    fake = FakeChatModel(
        [
            {
                "answer": "The pages say nothing about tax law.",
                "citations": ["bakery.pdf p.1"],
                "answerable": False,
            }
        ]
    )
    answer = await ask_async_("what is the corporate tax rate in Norway", fake, index, HashingEmbedder())
    assert answer.answer == CANNOT_ANSWER
    assert answer.citations == [] and not answer.answerable


async def test_malformed_reply_is_re_asked_once(index: Path) -> None:
    fake = FakeChatModel(
        [
            "Sure! The bakery opens at six.",
            {"answer": "It opens at six [bakery.pdf p.1].", "citations": [], "answerable": True},
        ]
    )
    answer = await ask_async_("when does the bakery open croissants", fake, index, HashingEmbedder())
    assert len(fake.calls) == 2
    assert [(c.document, c.page) for c in answer.citations] == [("bakery.pdf", 1)]


async def test_reply_still_malformed_after_re_ask_is_unanswerable(index: Path) -> None:
    fake = FakeChatModel(["not json", "still not json"])
    answer = await ask_async_("telescope aperture", fake, index, HashingEmbedder())
    assert not answer.answerable and answer.answer == CANNOT_ANSWER


def test_validate_answer_collects_inline_citations_without_duplicates() -> None:
    from polymodal.pipelines.retrieval import SearchHit

    pages = [
        SearchHit("a.pdf", 1, 1.0, None, "/x/a.pdf", "id1"),
        SearchHit("b.pdf", 4, 0.5, None, "/x/b.pdf", "id2"),
    ]
    raw = GroundedAnswer(
        answer="X [a.pdf p.1] and Y [b.pdf p. 4] and Z [a.pdf p.1] but not [c.pdf p.2].",
        citations=["a.pdf p.1"],
        answerable=True,
    )
    answer = validate_answer(raw, pages)
    assert [c.label for c in answer.citations] == ["a.pdf p.1", "b.pdf p.4"]
    assert "c.pdf" not in answer.answer and answer.answer.endswith("but not.")
