"""Provider-neutral chat messages. Adapters serialize these; media objects never know a wire format."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from polymodal.media.image import Image

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    """Plain text inside a message."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image inside a message.

    ``text_hint`` carries text already known for the image (a PDF page's own text layer); text-only backends
    use it instead of running OCR, vision backends ignore it. ``label`` names the image for the model
    (e.g. ``"page 2"``) so it can cite where it saw a value.
    """

    image: Image
    text_hint: str | None = None
    label: str | None = None


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    """One chat turn: a role and its ordered parts."""

    role: Role
    parts: tuple[Part, ...]

    @classmethod
    def system(cls, text: str) -> Message:
        """A system instruction."""
        return cls("system", (TextPart(text),))

    @classmethod
    def assistant(cls, text: str) -> Message:
        """A previous model answer (for multi-turn and re-asks)."""
        return cls("assistant", (TextPart(text),))

    @classmethod
    def user(cls, *content: str | Image | Part) -> Message:
        """A user turn from text, images and parts in order."""
        parts: list[Part] = []
        for item in content:
            if isinstance(item, str):
                parts.append(TextPart(item))
            elif isinstance(item, Image):
                parts.append(ImagePart(item))
            else:
                parts.append(item)
        return cls("user", tuple(parts))

    @property
    def text(self) -> str:
        """The text parts joined with blank lines."""
        return "\n\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        """The image parts in order."""
        return [p for p in self.parts if isinstance(p, ImagePart)]


def count_images(messages: Iterable[Message]) -> int:
    """How many images a conversation carries."""
    return sum(len(m.images) for m in messages)


__all__ = ["ImagePart", "Message", "Part", "Role", "TextPart", "count_images"]
