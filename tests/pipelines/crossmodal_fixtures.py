"""Fixtures for the cross-modal tests: a deterministic pixel embedder and an image folder with bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from polymodal.media.image import Image

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 220), "yellow": (230, 220, 30)}


class PixelEmbedder:
    """Image -> its 4x4 thumbnail as a centred, normalised 48-d vector; a text naming a colour -> the vector
    of a solid image of it. Similar pictures get similar vectors, so search/dedup/classify are checkable."""

    id = "fake:pixels-4x4"
    dim = 48
    normalized = True

    def __init__(self) -> None:
        self.image_calls = 0

    def embed_images(self, images: list[Image]) -> np.ndarray:
        self.image_calls += len(images)
        rows = [
            np.asarray(im.to_pil().resize((4, 4), PILImage.Resampling.BOX), dtype=np.float32).ravel() / 255
            - 0.5
            for im in images
        ]
        return _unit(np.asarray(rows, dtype=np.float32).reshape(len(images), self.dim))

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            colour = next((c for c in COLOURS if c in text.lower()), None)
            solid = PILImage.new("RGB", (8, 8), COLOURS[colour] if colour else (128, 128, 128))
            rows.append(self.embed_images([Image.from_pil(solid)])[0])
        self.image_calls -= len(texts)
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return (x / norms).astype(np.float32)


def blotchy(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (120, 90)) -> PILImage.Image:
    """A mostly ``colour`` picture with a random dark patch, so pictures of one colour still differ."""
    rng = np.random.default_rng(seed)
    array = np.empty((size[1], size[0], 3), dtype=np.uint8)
    array[:] = colour
    y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    array[y : y + size[1] // 2, x : x + size[0] // 2] = rng.integers(0, 80, 3)
    return PILImage.fromarray(array)


def make_library(root: Path) -> dict[str, Path]:
    """A folder tree of good images (incl. CMYK, 16-bit, palette, alpha, a panorama, a resized duplicate)
    and bad files (corrupt, zero-byte, a decompression bomb, a text file named .jpg)."""
    sub = root / "album" / "nested"
    sub.mkdir(parents=True)
    files: dict[str, Path] = {}

    def save(name: str, image: PILImage.Image, folder: Path = root, **kw: object) -> None:
        files[name] = folder / name
        image.save(files[name], **kw)

    save("red1.png", blotchy(COLOURS["red"], 1))
    save("red2.jpg", blotchy(COLOURS["red"], 2), quality=90)
    save("green1.png", blotchy(COLOURS["green"], 3), folder=sub)
    save("blue1.webp", blotchy(COLOURS["blue"], 4), folder=sub)
    save("blue1_copy.jpg", blotchy(COLOURS["blue"], 4).resize((60, 45)), folder=sub, quality=85)
    save("yellow_cmyk.jpg", blotchy(COLOURS["yellow"], 5).convert("CMYK"), quality=95)
    save("green_palette.gif", blotchy(COLOURS["green"], 6).convert("P", palette=PILImage.Palette.ADAPTIVE))
    rgba = blotchy(COLOURS["blue"], 7).convert("RGBA")
    rgba.putalpha(200)
    save("blue_alpha.png", rgba)
    deep = (np.asarray(blotchy(COLOURS["red"], 8).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    save("grey16.png", PILImage.fromarray(deep))
    save("panorama.jpg", blotchy(COLOURS["yellow"], 9, size=(6000, 500)), quality=80)
    broken = io.BytesIO()
    blotchy(COLOURS["red"], 10).save(broken, format="PNG")
    (root / "corrupt.png").write_bytes(broken.getvalue()[:80])
    files["corrupt.png"] = root / "corrupt.png"
    (root / "empty.jpg").write_bytes(b"")
    files["empty.jpg"] = root / "empty.jpg"
    (root / "not_an_image.jpg").write_text("hello, I am text")
    files["not_an_image.jpg"] = root / "not_an_image.jpg"
    (root / "notes.txt").write_text("ignored: not an image suffix")
    files["bomb.png"] = root / "album" / "bomb.png"
    PILImage.new("1", (12_000, 12_000)).save(files["bomb.png"])  # 144 MP > the 80 MP default limit
    return files


GOOD = [
    "red1.png",
    "red2.jpg",
    "green1.png",
    "blue1.webp",
    "blue1_copy.jpg",
    "yellow_cmyk.jpg",
    "green_palette.gif",
    "blue_alpha.png",
    "grey16.png",
    "panorama.jpg",
]
BAD = ["corrupt.png", "empty.jpg", "not_an_image.jpg", "bomb.png"]
