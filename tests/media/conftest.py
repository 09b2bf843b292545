"""Fixtures for the media tests: real images from scikit-image, private render pools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image as PILImage

from polymodal.media import _render


@pytest.fixture(scope="session")
def astronaut() -> PILImage.Image:
    """A real 512x512 RGB photograph."""
    from skimage import data as skdata  # imported here: the folder's other tests need not pay for it

    return PILImage.fromarray(skdata.astronaut())


@pytest.fixture
def fresh_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[_render.RenderPool]:
    """A private render pool installed as the default, closed after the test."""
    pool = _render.RenderPool(max_workers=1)
    monkeypatch.setattr(_render, "_default_pool", pool)
    yield pool
    pool.close()
