"""Sentence streaming for TTS and the truncation of interrupted replies."""

from __future__ import annotations

from polymodal.backends.speech import SentenceSplitter, split_sentences
from polymodal.pipelines.voice.session import Conversation, truncate_to_fraction


def test_sentence_splitter_emits_sentences_as_soon_as_they_are_complete() -> None:
    splitter = SentenceSplitter(min_chars=12)
    deltas = ["Hello", " there.", " How are", " you today? I", " am fine", "; thanks.\nBye"]
    out = [splitter.push(d) for d in deltas]
    # "I am fine; " is shorter than min_chars, so it waits for the rest of its sentence
    assert out == [[], [], ["Hello there. "], ["How are you today? "], [], ["I am fine; thanks.\n"]]
    assert splitter.flush() == ["Bye"]
    assert "".join(s for batch in out for s in batch) + "Bye" == "".join(deltas)
    assert SentenceSplitter().flush() == []


def test_abbreviation_like_short_pieces_are_held_back_and_numbers_are_not_split() -> None:
    splitter = SentenceSplitter(min_chars=12)
    assert splitter.push("Dr. Smith paid 3.50 dollars. ") == ["Dr. Smith paid 3.50 dollars. "]


def test_the_first_piece_may_end_at_a_clause_so_speech_starts_sooner() -> None:
    splitter = SentenceSplitter(min_chars=12, first_clause_chars=24)
    assert splitter.push("Well, this is a classic example, ") == ["Well, this is a classic example, "]
    assert splitter.push("used by typists, often. And ") == ["used by typists, often. "]  # sentences again
    assert splitter.flush() == ["And "]
    assert splitter.push("Short, then more. ") == ["Short, then more. "]  # a new stream: first piece again


async def test_split_sentences_on_a_stream() -> None:
    async def stream():
        for piece in ["One. ", "Two is longer than one. ", "Three"]:
            yield piece

    assert [s async for s in split_sentences(stream(), min_chars=1)] == [
        "One. ",
        "Two is longer than one. ",
        "Three",
    ]


def test_truncation_keeps_the_words_heard() -> None:
    text = "The train leaves at nine from platform four."
    assert truncate_to_fraction(text, 1.0) == text
    assert truncate_to_fraction(text, 0.0) == ""
    assert truncate_to_fraction(text, 0.45) == "The train leaves at"  # "nine" is centred at 0.5
    assert truncate_to_fraction(text, 0.04) == ""  # not even the middle of "The"


def test_conversation_starts_at_a_user_turn_and_skips_empty_replies() -> None:
    conversation = Conversation("Be brief.", max_messages=3)
    for i in range(3):
        conversation.add_user(f"question {i}")
        conversation.add_assistant(f"answer {i}" if i != 1 else "  ")
    roles = [(m.role, m.text) for m in conversation.messages()]
    # the last 3 messages are kept; the empty (fully interrupted) reply to question 1 left no assistant turn
    assert roles == [
        ("system", "Be brief."),
        ("user", "question 1"),
        ("user", "question 2"),
        ("assistant", "answer 2"),
    ]
