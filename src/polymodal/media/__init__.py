"""Media: safe loading of images and documents (pure values, no provider knowledge).

Every loader checks :class:`Limits` and raises :class:`polymodal.errors.InputError` naming the source and
the limit that was hit.
"""

from polymodal.media.document import SUPPORTED_SUFFIXES, Document, Page, iter_sources
from polymodal.media.image import EncodedImage, Image
from polymodal.media.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "SUPPORTED_SUFFIXES",
    "Document",
    "EncodedImage",
    "Image",
    "Limits",
    "Page",
    "iter_sources",
]
