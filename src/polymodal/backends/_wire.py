"""Provider-neutral preparation of a conversation before an adapter serializes it.

Every remote adapter needs the same three things: the system text pulled out, the images encoded within the
endpoint's pixel budget (off the event loop: resizing and compressing a page takes tens of milliseconds), and
a typed error when a conversation carries more images than the endpoint accepts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from polymodal.backends.base import Capabilities
from polymodal.backends.messages import ImagePart, Message, Role, TextPart, count_images
from polymodal.errors import BackendError, ErrorCategory
from polymodal.media.image import EncodedImage


@dataclass(frozen=True)
class WireImage:
    """An encoded image plus the label the model should see with it."""

    encoded: EncodedImage
    label: str | None = None


WirePart = str | WireImage


@dataclass(frozen=True)
class WireMessage:
    """A non-system message whose images are already encoded."""

    role: Role
    parts: tuple[WirePart, ...]

    @property
    def text(self) -> str:
        """The text parts joined with blank lines."""
        return "\n\n".join(p for p in self.parts if isinstance(p, str))


@dataclass(frozen=True)
class WireConversation:
    """System text (all system messages joined) and the other turns, in order."""

    system: str
    messages: tuple[WireMessage, ...]


def check_image_count(
    messages: Sequence[Message], capabilities: Capabilities, provider: str, model: str
) -> None:
    """Raise a permanent INVALID_REQUEST error before sending more images than the endpoint accepts."""
    if not capabilities.images and count_images(messages):
        raise BackendError(
            "this model does not accept images",
            category=ErrorCategory.INVALID_REQUEST,
            provider=provider,
            model=model,
        )
    limit = capabilities.max_images
    count = count_images(messages)
    if limit is not None and count > limit:
        raise BackendError(
            f"{count} images sent, this endpoint accepts at most {limit} per request",
            category=ErrorCategory.INVALID_REQUEST,
            provider=provider,
            model=model,
        )


def _encode(part: ImagePart, image_format: str, max_pixels: int | None) -> WireImage:
    return WireImage(part.image.encode(image_format, max_pixels=max_pixels), part.label)


async def prepare(
    messages: Sequence[Message],
    capabilities: Capabilities,
    *,
    provider: str,
    model: str,
    image_format: str,
) -> WireConversation:
    """Split out system text and encode every image (in a worker thread) within the pixel budget."""
    check_image_count(messages, capabilities, provider, model)
    image_parts = [p for m in messages for p in m.parts if isinstance(p, ImagePart)]
    encoded = iter(
        await asyncio.gather(
            *(asyncio.to_thread(_encode, p, image_format, capabilities.max_image_pixels) for p in image_parts)
        )
    )
    system: list[str] = []
    turns: list[WireMessage] = []
    for message in messages:
        if message.role == "system":
            system.append(message.text)
            continue
        parts: list[WirePart] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                parts.append(part.text)
            else:
                parts.append(next(encoded))
        turns.append(WireMessage(message.role, tuple(parts)))
    return WireConversation("\n\n".join(t for t in system if t), tuple(turns))


__all__ = ["WireConversation", "WireImage", "WireMessage", "WirePart", "check_image_count", "prepare"]
