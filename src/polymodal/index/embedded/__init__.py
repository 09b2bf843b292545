"""The default single-machine multi-vector engine: memory-mapped, compressed segments, no server."""

from polymodal.index.embedded.engine import EmbeddedMultiVectorIndex

__all__ = ["EmbeddedMultiVectorIndex"]
