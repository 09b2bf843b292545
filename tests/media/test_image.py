from __future__ import annotations

import base64
import hashlib
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageFile

from polymodal.errors import InputError
from polymodal.media import DEFAULT_LIMITS, EncodedImage, Image, Limits
from polymodal.media.image import fit_size
from tests.media.helpers import encode_pil, mean_abs_diff, png_claiming_size, solid

# (Pillow format, allowed mean absolute difference from the original photo after a round trip)
FORMATS = [("JPEG", 6.0), ("PNG", 0.0), ("WEBP", 6.0), ("TIFF", 0.0), ("GIF", 20.0), ("BMP", 0.0)]


@pytest.mark.parametrize(("fmt", "tolerance"), FORMATS)
def test_each_format_decodes_to_rgb(astronaut: PILImage.Image, fmt: str, tolerance: float) -> None:
    photo = astronaut.resize((256, 192))
    image = Image.from_bytes(encode_pil(photo, fmt), name=f"photo.{fmt.lower()}")
    assert image.format == fmt
    assert (image.width, image.height) == (256, 192)
    decoded = image.to_pil()
    assert decoded.mode == "RGB"
    assert decoded.size == (256, 192)
    assert mean_abs_diff(decoded, photo) <= tolerance


def test_open_dispatches_on_source_type(tmp_path: Path, astronaut: PILImage.Image) -> None:
    data = encode_pil(astronaut, "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    from_str = Image.open(str(path))
    assert from_str.name == str(path)
    assert Image.open(path).name == str(path)
    assert Image.open(data).name == "<bytes>"
    assert Image.open(data, name="upload.png").name == "upload.png"
    assert Image.open(astronaut).name == "<pil>"
    assert Image.open(from_str) is from_str
    assert from_str.content_hash == hashlib.sha256(data).hexdigest()
    with pytest.raises(TypeError):
        Image.open(42)  # type: ignore[arg-type]


def test_width_and_height_come_from_the_header_without_decoding(
    astronaut: PILImage.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode_pil(astronaut.resize((300, 200)), "JPEG")

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr("polymodal.media._decode.decode_rgb", no_decoding)
    image = Image.from_bytes(data)
    assert (image.width, image.height) == (300, 200)


def test_multipage_tiff_image_is_the_first_page() -> None:
    frames = [solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))]
    data = encode_pil(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    image = Image.from_bytes(data)
    assert image.frame_count == 3
    assert image.to_pil().getpixel((0, 0)) == (255, 0, 0)


def test_gif_gives_the_first_frame() -> None:
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    data = encode_pil(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    image = Image.from_bytes(data)
    assert image.frame_count == 2
    assert image.to_pil().getpixel((5, 5)) == (255, 0, 0)


def test_cmyk_is_converted_to_rgb() -> None:
    cmyk = PILImage.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta+yellow: red
    pixel = Image.from_bytes(encode_pil(cmyk, "JPEG", quality=95)).to_pil().getpixel((8, 8))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 230 and pixel[1] < 30 and pixel[2] < 30


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    data = encode_pil(PILImage.fromarray(ramp), "PNG")
    out = Image.from_bytes(data).to_numpy()
    assert out.shape == (4, 256, 3)
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[128] - 128) <= 1  # a clipping conversion would give 255 from value 256 upwards
    assert np.all(np.diff(row) >= 0)


def test_palette_with_transparency_is_flattened_on_white() -> None:
    palette = PILImage.new("P", (10, 10), 0)
    palette.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    palette.putpixel((0, 0), 1)
    data = encode_pil(palette, "PNG", transparency=0)
    out = Image.from_bytes(data).to_pil()
    assert out.getpixel((5, 5)) == (255, 255, 255)  # index 0 (red) is transparent
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_rgba_and_la_alpha_composite_on_white() -> None:
    rgba = PILImage.new("RGBA", (4, 4), (255, 0, 0, 128))
    pixel = Image.from_bytes(encode_pil(rgba, "PNG")).to_pil().getpixel((1, 1))
    assert pixel == pytest.approx((255, 127, 127), abs=2)
    la = PILImage.new("LA", (4, 4), (0, 0))
    assert Image.from_bytes(encode_pil(la, "PNG")).to_pil().getpixel((1, 1)) == (255, 255, 255)
    assert Image.from_pil(rgba).to_pil().getpixel((0, 0)) == pytest.approx((255, 127, 127), abs=2)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    stored = PILImage.new("RGB", (200, 100), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))  # left half red, right half blue
    exif = PILImage.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    image = Image.from_bytes(encode_pil(stored, fmt, exif=exif.tobytes()))
    assert (image.width, image.height) == (100, 200)
    shown = image.to_pil()
    assert shown.size == (100, 200)
    top, bottom = shown.getpixel((50, 20)), shown.getpixel((50, 180))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_resize_to_budget_keeps_aspect_and_never_upscales(astronaut: PILImage.Image) -> None:
    wide = Image.from_pil(astronaut.resize((1000, 500)))
    small = wide.resized_to_budget(20_000)
    assert small.size == (200, 100)
    assert small.to_pil().size == (200, 100)
    assert small.name == wide.name
    assert wide.resized_to_budget(10_000_000) is wide
    patches = wide.resized_to_budget(20_000, multiple_of=28)
    assert patches.size == (196, 84)


@pytest.mark.parametrize("seed", range(5))
def test_fit_size_stays_within_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(1, 5000, size=2))
        budget = int(rng.integers(1, 4_000_000))
        w, h = fit_size(width, height, budget)
        assert w * h <= budget
        assert w <= width and h <= height
        if w * h < width * height and min(w, h) > 20:
            assert math.isclose(w / h, width / height, rel_tol=0.1)
    assert fit_size(1, 80_000_000, 4_000_000) == (1, 4_000_000)  # extreme aspect: one side clamps at 1
    with pytest.raises(ValueError):
        fit_size(10, 10, 0)


def test_encode_png_jpeg_webp(astronaut: PILImage.Image) -> None:
    image = Image.from_bytes(encode_pil(astronaut, "PNG"))
    png = image.encode()
    assert isinstance(png, EncodedImage)
    assert png.mime_type == "image/png" and (png.width, png.height) == (512, 512)
    assert mean_abs_diff(PILImage.open(io.BytesIO(png.data)).convert("RGB"), astronaut) == 0
    assert png.data_url().startswith("data:image/png;base64,")
    assert base64.b64decode(png.b64()) == png.data
    jpeg = image.encode("jpg", quality=80, max_pixels=128 * 128)
    assert jpeg.mime_type == "image/jpeg" and (jpeg.width, jpeg.height) == (128, 128)
    assert PILImage.open(io.BytesIO(jpeg.data)).size == (128, 128)
    webp = image.encode("WEBP")
    assert webp.mime_type == "image/webp" and webp.data[8:12] == b"WEBP"
    with pytest.raises(ValueError, match="cannot encode"):
        image.encode("GIF")


def test_to_numpy_and_content_hash_for_pil_input(astronaut: PILImage.Image) -> None:
    image = Image.from_pil(astronaut)
    array = image.to_numpy()
    assert array.shape == (512, 512, 3) and array.dtype == np.uint8
    assert np.array_equal(array, np.asarray(astronaut))
    assert image.content_hash == Image.from_pil(astronaut.copy()).content_hash
    assert image.content_hash != Image.from_pil(astronaut.rotate(90)).content_hash


# ---- refusals ---------------------------------------------------------------------------------------------


def test_zero_byte_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as caught:
        Image.open(empty)
    assert caught.value.source == str(empty)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        Image.from_path(tmp_path / "nope.png")
    with pytest.raises(InputError):
        Image.from_path(tmp_path)


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_an_error_not_a_grey_image(astronaut: PILImage.Image, progressive: bool) -> None:
    data = encode_pil(astronaut, "JPEG", progressive=progressive)
    image = Image.from_bytes(data[: len(data) * 2 // 3], name="cut.jpg")  # the header is intact
    with pytest.raises(InputError, match="truncated") as caught:
        image.to_pil()
    assert caught.value.source == "cut.jpg"


def test_truncated_images_stay_refused_when_pillow_was_told_otherwise(
    astronaut: PILImage.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode_pil(astronaut, "JPEG")
    with pytest.warns(RuntimeWarning, match="LOAD_TRUNCATED_IMAGES"), pytest.raises(InputError):
        Image.from_bytes(data[: len(data) // 2]).to_pil()


def test_corrupt_png_is_refused(astronaut: PILImage.Image) -> None:
    data = bytearray(encode_pil(astronaut, "PNG"))
    data[len(data) // 2] ^= 0xFF  # flip bits inside the pixel data: the chunk CRC no longer matches
    with pytest.raises(InputError):
        Image.from_bytes(bytes(data)).to_pil()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (b"just some notes, not an image\n", "text"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        (b"%PDF-1.7\n...", "PDF"),
    ],
)
def test_unsupported_format_names_the_format_and_the_supported_list(
    tmp_path: Path, payload: bytes, named: str
) -> None:
    fake = tmp_path / "fake.png"
    fake.write_bytes(payload)
    with pytest.raises(InputError, match="unsupported format") as caught:
        Image.open(fake)
    message = str(caught.value)
    assert named in message and "JPEG, PNG, WebP, TIFF, GIF, BMP" in message
    assert caught.value.source == str(fake)


def test_decompression_bomb_is_refused_from_the_header_alone() -> None:
    bomb = png_claiming_size(100_000, 100_000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        Image.from_bytes(bomb, name="bomb.png")
    assert time.perf_counter() - started < 1.0
    assert caught.value.limit == f"max_pixels={DEFAULT_LIMITS.max_pixels}"
    assert "bomb.png" in str(caught.value) and "max_pixels=80000000" in str(caught.value)


def test_pillow_bomb_error_is_translated_too() -> None:
    # Our own limit raised above Pillow's hard bound: Pillow's DecompressionBombError must still be typed.
    bomb = png_claiming_size(20_000, 20_000)
    with pytest.raises(InputError, match="decompression") as caught:
        Image.from_bytes(bomb, limits=Limits(max_pixels=10**12))
    assert caught.value.limit == "max_pixels=1000000000000"


def test_max_pixels_and_max_bytes_limits(astronaut: PILImage.Image, tmp_path: Path) -> None:
    data = encode_pil(astronaut, "PNG")
    with pytest.raises(InputError) as caught:
        Image.from_bytes(data, limits=Limits(max_pixels=512 * 511))
    assert caught.value.limit == f"max_pixels={512 * 511}"
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        Image.from_path(path, limits=Limits(max_bytes=1000))
    assert caught.value.limit == "max_bytes=1000" and caught.value.source == str(path)
