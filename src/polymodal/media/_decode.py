"""Safe image decoding: the one place that talks to Pillow and translates its exceptions.

Untrusted bytes go through :func:`probe` (header only: format, size, EXIF orientation, frame count) and
:func:`decode_rgb` (full decode of one frame to 8-bit RGB). Both check :class:`Limits` before any pixel is
decoded and raise :class:`InputError` naming the source and, where one applies, the limit.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFile, UnidentifiedImageError

from polymodal.errors import InputError
from polymodal.media.limits import Limits

#: Pillow format names accepted (MPO is the multi-picture JPEG that many phone cameras write).
PILLOW_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "GIF", "BMP")
#: What error messages list as supported.
SUPPORTED_FORMAT_NAMES = "JPEG, PNG, WebP, TIFF, GIF, BMP"
_OPEN_FORMATS = ["JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP"]  # MPO is reached through the JPEG plugin

_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION: dict[int, PILImage.Transpose] = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}
#: Orientations that turn the image by 90 degrees, so width and height swap.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Exceptions Pillow's plugins raise on malformed data (it has no common base class for them).
_DECODER_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
)

# Magic numbers of formats we refuse, so the error can name what was given.
_KNOWN_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%PDF-", "PDF (open it with Document)"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"PK\x03\x04", "ZIP archive"),
    (0, b"\x1f\x8b", "gzip data"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
)


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an image, before any pixel is decoded."""

    format: str
    width: int  # as stored, before EXIF orientation
    height: int
    orientation: int  # EXIF orientation 1..8 (1 = as stored)
    frames: int

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation is applied."""
        if self.orientation in SWAPPING_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height


def sniff_format(data: bytes) -> str:
    """Best guess at the format of data Pillow refused, for the error message."""
    for offset, magic, label in _KNOWN_SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return label
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html")):
        return "HTML"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text"


def _unsupported(source: str, what: str) -> InputError:
    return InputError(source, f"unsupported format: {what}; supported: {SUPPORTED_FORMAT_NAMES}")


def check_bytes(source: str, size: int, limits: Limits) -> None:
    """Refuse empty input and input larger than ``limits.max_bytes``."""
    if size == 0:
        raise InputError(source, "empty input (0 bytes)")
    if size > limits.max_bytes:
        raise InputError(source, f"input is {size} bytes", limit=f"max_bytes={limits.max_bytes}")


def _check_pixels(source: str, width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise InputError(source, f"invalid image size {width}x{height}")
    if width * height > limits.max_pixels:
        raise InputError(
            source,
            f"image is {width}x{height} = {width * height} pixels (decompression bomb guard)",
            limit=f"max_pixels={limits.max_pixels}",
        )


def _require_strict_truncation() -> None:
    # Pillow's switch is process-wide; another library may have turned it on. A truncated image must be an
    # error here, never a half-grey picture, so it is switched back off (once, with a warning).
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        warnings.warn(
            "polymodal: PIL.ImageFile.LOAD_TRUNCATED_IMAGES was True; setting it to False so that "
            "truncated images are refused",
            RuntimeWarning,
            stacklevel=3,
        )
        ImageFile.LOAD_TRUNCATED_IMAGES = False


@contextmanager
def translate_errors(source: str, limits: Limits) -> Iterator[None]:
    """Turn every exception Pillow raises while reading ``source`` into an :class:`InputError`."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check runs on the header size; Pillow's softer warning adds nothing.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            yield
    except InputError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise InputError(
            source,
            f"image exceeds Pillow's decompression-bomb bound ({exc})",
            limit=f"max_pixels={limits.max_pixels}",
        ) from exc
    except MemoryError as exc:
        raise InputError(source, "not enough memory to decode the image") from exc
    except _DECODER_ERRORS as exc:
        raise InputError(source, f"corrupt or truncated image data ({exc})") from exc


def _open(data: bytes, source: str) -> ImageFile.ImageFile:
    try:
        return PILImage.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except UnidentifiedImageError:
        raise _unsupported(source, sniff_format(data)) from None


def _orientation(image: ImageFile.ImageFile) -> int:
    # Read from the header only. PNG's getexif() would decode the whole image to look for a late eXIf
    # chunk; the PNG spec puts eXIf before IDAT, which Pillow has already parsed into info["exif"].
    if image.format == "TIFF":
        return 1  # Pillow's TIFF plugin applies the orientation tag itself (size at open, pixels at load)
    if image.format == "PNG":
        raw = image.info.get("exif")
        if not raw:
            return 1
        exif = PILImage.Exif()
        exif.load(raw)
    else:
        exif = image.getexif()
    value = exif.get(_EXIF_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _info(image: ImageFile.ImageFile, source: str) -> ImageInfo:
    fmt = image.format or "unknown"
    if fmt not in PILLOW_FORMATS:
        raise _unsupported(source, fmt)
    return ImageInfo(
        format=fmt,
        width=image.size[0],
        height=image.size[1],
        orientation=_orientation(image),
        frames=int(getattr(image, "n_frames", 1)),
    )


def probe(data: bytes, source: str, limits: Limits) -> ImageInfo:
    """Read the header of ``data``: format, size, orientation, frames. Checks bytes and pixel limits."""
    check_bytes(source, len(data), limits)
    with translate_errors(source, limits), _open(data, source) as image:
        info = _info(image, source)
        _check_pixels(source, info.width, info.height, limits)
        return info


def probe_frames(data: bytes, source: str, limits: Limits, *, max_frames: int) -> list[ImageInfo]:
    """Header facts of every frame (TIFF pages can differ in size), each checked against the limits.

    Refuses more than ``max_frames`` frames before reading them.
    """
    check_bytes(source, len(data), limits)
    with translate_errors(source, limits), _open(data, source) as image:
        first = _info(image, source)
        if first.frames > max_frames:
            raise InputError(
                source,
                f"image has {first.frames} pages; refusing rather than truncating",
                limit=f"max_pages={max_frames}",
            )
        infos = []
        for index in range(first.frames):
            if index:
                image.seek(index)
            _check_pixels(f"{source}#page={index + 1}", image.size[0], image.size[1], limits)
            infos.append(
                ImageInfo(first.format, image.size[0], image.size[1], _orientation(image), first.frames)
            )
        return infos


def decode_rgb(
    data: bytes,
    source: str,
    limits: Limits,
    *,
    frame: int = 0,
    at_least: tuple[int, int] | None = None,
) -> PILImage.Image:
    """Decode one frame of ``data`` to an 8-bit RGB image with the EXIF orientation applied.

    ``at_least`` (displayed width, height) lets JPEG decode at a reduced DCT scale that is still at least
    that large: several times faster when the caller is going to downscale anyway.
    """
    check_bytes(source, len(data), limits)
    _require_strict_truncation()
    with translate_errors(source, limits):
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            with _open(data, source) as checked:
                checked.verify()  # chunk CRCs: catches corruption that decoding alone can miss
        with _open(data, source) as image:
            info = _info(image, source)
            if frame:
                if frame >= info.frames:
                    raise InputError(source, f"frame {frame} requested; the image has {info.frames}")
                image.seek(frame)
            _check_pixels(source, image.size[0], image.size[1], limits)
            if at_least is not None and info.format in ("JPEG", "MPO"):
                wanted = at_least[::-1] if info.orientation in SWAPPING_ORIENTATIONS else at_least
                image.draft("RGB", (wanted[0], wanted[1]))
            image.load()
            rgb = to_rgb(image, source)
            transpose = _TRANSPOSE_FOR_ORIENTATION.get(info.orientation)
            return rgb.transpose(transpose) if transpose is not None else rgb


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f":
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(finite.min()), float(finite.max())
        if low >= 0.0 and high <= 1.0:
            return np.round(finite * 255.0).astype(np.uint8)
        span = high - low or 1.0
        return np.round((finite - low) * (255.0 / span)).astype(np.uint8)
    wide = array.astype(np.int64)
    if wide.min() >= 0 and wide.max() <= 65535:
        return (wide // 257).astype(np.uint8)  # 16-bit: 65535 -> 255
    low, high = int(wide.min()), int(wide.max())
    return ((wide - low) * 255 // max(high - low, 1)).astype(np.uint8)


def _flatten_alpha(image: PILImage.Image) -> PILImage.Image:
    rgba = image.convert("RGBA")
    background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: PILImage.Image, source: str = "<pil>") -> PILImage.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha onto white, 16-bit and float scaled, CMYK via ICC."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    palette_alpha = mode == "P" and (
        "transparency" in image.info or getattr(image.palette, "mode", "") == "RGBA"
    )
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or palette_alpha:
        return _flatten_alpha(image)
    if mode.startswith("I") or mode == "F":
        gray = PILImage.fromarray(_scale_to_uint8(np.asarray(image)), mode="L")
        return gray.convert("RGB")
    if mode == "CMYK":
        return _cmyk_to_rgb(image)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise InputError(source, f"unsupported pixel mode {mode!r}") from exc


def _cmyk_to_rgb(image: PILImage.Image) -> PILImage.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms

            source_profile = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(
                image, source_profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImportError, OSError, ValueError, ImageCms.PyCMSError):
            pass  # a broken or unusable profile: fall back to the plain conversion below
    return image.convert("RGB")


__all__ = [
    "PILLOW_FORMATS",
    "SUPPORTED_FORMAT_NAMES",
    "ImageInfo",
    "check_bytes",
    "decode_rgb",
    "probe",
    "probe_frames",
    "sniff_format",
    "to_rgb",
    "translate_errors",
]
