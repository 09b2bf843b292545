"""Image: a lazily decoded picture with provenance, checked against :class:`Limits` before decoding."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage

from polymodal.errors import InputError
from polymodal.media import _decode
from polymodal.media.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    import numpy as np

_ENCODE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_FORMAT_ALIASES = {"JPG": "JPEG"}


@dataclass(frozen=True)
class EncodedImage:
    """Encoded image bytes ready for the wire, with their MIME type and pixel size."""

    data: bytes
    mime_type: str
    width: int
    height: int

    def b64(self) -> str:
        """The bytes as standard base64 text."""
        return base64.b64encode(self.data).decode("ascii")

    def data_url(self) -> str:
        """An RFC 2397 data URL, e.g. ``data:image/png;base64,...``."""
        return f"data:{self.mime_type};base64,{self.b64()}"

    def __repr__(self) -> str:
        return f"EncodedImage({self.mime_type}, {self.width}x{self.height}, {len(self.data)} bytes)"


def read_file(path: str | os.PathLike[str], limits: Limits, name: str | None = None) -> tuple[bytes, str]:
    """Read a local file after checking its size; returns (bytes, name used in errors)."""
    label = name if name is not None else os.fspath(path)
    try:
        size = os.stat(path).st_size
        if not Path(path).is_file():
            raise InputError(label, "not a regular file")
        _decode.check_bytes(label, size, limits)
        with open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # the file may have grown since stat
    except FileNotFoundError:
        raise InputError(label, "no such file") from None
    except IsADirectoryError:
        raise InputError(label, "is a directory, not a file") from None
    except PermissionError:
        raise InputError(label, "permission denied") from None
    except OSError as exc:
        raise InputError(label, f"cannot read file ({exc.strerror or exc})") from exc
    _decode.check_bytes(label, len(data), limits)
    return data, label


class Image:
    """Lazily decoded image with provenance; decoding is checked against :class:`Limits`.

    Construction reads only the header (format, size, EXIF orientation), so oversized, empty or
    unsupported input fails early and cheaply; pixels are decoded on demand by :meth:`to_pil`,
    :meth:`encode` and :meth:`to_numpy` (each call decodes afresh, nothing large is cached).

    Attributes:
        name: where the image came from, used in errors: the path, the URL, ``"<bytes>"`` or a given name.
        limits: the limits this image is decoded under.
    """

    __slots__ = ("_data", "_encoded", "_frame", "_hash", "_info", "_pil", "_rgb", "limits", "name")

    def __init__(
        self,
        *,
        name: str,
        limits: Limits,
        data: bytes | None = None,
        pil: PILImage.Image | None = None,
        rgb: tuple[bytes | bytearray, int, int] | None = None,
        frame: int = 0,
        info: _decode.ImageInfo | None = None,
    ) -> None:
        """Internal: use :meth:`open` or one of the ``from_*`` constructors."""
        if sum(source is not None for source in (data, pil, rgb)) != 1:
            raise ValueError("Image needs exactly one of data=, pil= or rgb=")
        self.name = name
        self.limits = limits
        self._data = data
        self._pil = pil
        self._rgb = rgb  # raw RGB rows, width, height: a rendered page, turned into PIL only on demand
        self._frame = frame
        self._hash: str | None = None
        self._encoded: dict[tuple[str, int, int | None], EncodedImage] = {}
        if data is not None:
            self._info = info if info is not None else _decode.probe(data, name, limits)
            if frame >= self._info.frames:
                raise InputError(name, f"frame {frame} requested; the image has {self._info.frames}")
        elif pil is not None:
            self._info = _decode.ImageInfo("PIL", pil.width, pil.height, 1, 1)
        else:
            assert rgb is not None
            self._info = _decode.ImageInfo("RGB", rgb[1], rgb[2], 1, 1)

    # -- constructors -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        source: str | os.PathLike[str] | bytes | Image | PILImage.Image,
        *,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
    ) -> Image:
        """Open an image from a path, URL (``http://``/``https://``), bytes, a PIL image or an Image."""
        if isinstance(source, Image):
            return source
        if isinstance(source, PILImage.Image):
            return cls.from_pil(source, name=name or "<pil>")
        if isinstance(source, bytes | bytearray | memoryview):
            return cls.from_bytes(bytes(source), name=name or "<bytes>", limits=limits)
        if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
            return cls.from_url(source, limits=limits, name=name)
        if isinstance(source, str | os.PathLike):
            return cls.from_path(source, limits=limits, name=name)
        raise TypeError(f"cannot open an image from {type(source).__name__}")

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS, name: str | None = None
    ) -> Image:
        """Read an image file (its size is checked against ``limits.max_bytes`` before reading)."""
        data, label = read_file(path, limits, name)
        return cls(name=label, limits=limits, data=data)

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "<bytes>", limits: Limits = DEFAULT_LIMITS) -> Image:
        """Wrap encoded image bytes (JPEG, PNG, WebP, TIFF, GIF, BMP)."""
        return cls(name=name, limits=limits, data=bytes(data))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
        allow_private: bool = False,
    ) -> Image:
        """Download an image over http(s), refusing private, loopback and metadata addresses.

        ``allow_private=True`` permits loopback and private networks (a local server, an intranet); it is a
        parameter on purpose, never an environment variable. Cloud metadata endpoints stay refused.
        """
        from polymodal.media._fetch import fetch

        fetched = fetch(url, limits=limits, allow_private=allow_private)
        return cls(name=name or url, limits=limits, data=fetched.data)

    @classmethod
    def from_pil(cls, image: PILImage.Image, *, name: str = "<pil>") -> Image:
        """Wrap an already decoded PIL image (converted to RGB now; the caller's object is not kept)."""
        return cls(name=name, limits=DEFAULT_LIMITS, pil=_decode.to_rgb(image, name))

    @classmethod
    def _from_rgb(
        cls, pixels: bytes | bytearray, size: tuple[int, int], *, name: str, limits: Limits
    ) -> Image:
        """Raw 8-bit RGB rows (a rendered PDF page), checked against the limits before use."""
        width, height = size
        if width <= 0 or height <= 0:
            raise InputError(name, f"invalid image size {width}x{height}")
        if width * height > limits.max_pixels:
            raise InputError(
                name, f"page is {width}x{height} pixels", limit=f"max_pixels={limits.max_pixels}"
            )
        if len(pixels) != width * height * 3:
            raise InputError(name, f"expected {width * height * 3} bytes of RGB pixels, got {len(pixels)}")
        return cls(name=name, limits=limits, rgb=(pixels, width, height))

    @classmethod
    def _from_frame(
        cls, data: bytes, frame: int, *, name: str, limits: Limits, info: _decode.ImageInfo | None = None
    ) -> Image:
        """One frame of a multi-frame file (a TIFF page); ``info`` saves probing the file again."""
        return cls(name=name, limits=limits, data=data, frame=frame, info=info)

    # -- header facts ---------------------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Width in pixels after the EXIF orientation is applied (from the header; no decoding)."""
        return self._info.display_size[0]

    @property
    def height(self) -> int:
        """Height in pixels after the EXIF orientation is applied (from the header; no decoding)."""
        return self._info.display_size[1]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation is applied."""
        return self._info.display_size

    @property
    def format(self) -> str:
        """The source format as Pillow names it (``"JPEG"``, ``"PNG"``...); ``"PIL"`` for PIL input and
        ``"RGB"`` for raw pixels (a rendered PDF page)."""
        return self._info.format

    @property
    def frame_count(self) -> int:
        """Frames (pages) in the source file; :class:`Image` itself always shows one of them."""
        return self._info.frames

    @property
    def content_hash(self) -> str:
        """SHA-256 hex of the source bytes (of the pixels for PIL input; of bytes + frame for a TIFF page)."""
        if self._hash is None:
            digest = hashlib.sha256()
            if self._data is not None:
                digest.update(self._data)
                if self._frame:
                    digest.update(f"#frame={self._frame}".encode())
            else:  # the same digest for the same RGB pixels, whether they came as PIL or raw rows
                digest.update(f"RGB:{self.width}x{self.height}:".encode())
                digest.update(self._rgb[0] if self._rgb is not None else self.to_pil().tobytes())
            self._hash = digest.hexdigest()
        return self._hash

    @property
    def source_bytes(self) -> bytes | None:
        """The encoded bytes this image was read from (``None`` for PIL input and rendered pages)."""
        return self._data

    # -- pixels ----------------------------------------------------------------------------------------

    def to_pil(self) -> PILImage.Image:
        """Decode to a new RGB PIL image: EXIF-transposed, alpha flattened onto white, first frame."""
        if self._pil is not None:
            return self._pil.copy()
        if self._rgb is not None:
            pixels, width, height = self._rgb
            return PILImage.frombytes("RGB", (width, height), pixels)
        assert self._data is not None
        return _decode.decode_rgb(self._data, self.name, self.limits, frame=self._frame)

    def to_numpy(self) -> np.ndarray:
        """Decode to an ``H x W x 3`` ``uint8`` array."""
        import numpy as np

        if self._rgb is not None:
            pixels, width, height = self._rgb
            return np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, 3).copy()
        return np.array(self.to_pil(), dtype=np.uint8)

    def resized_to_budget(self, max_pixels: int, *, multiple_of: int = 1) -> Image:
        """Return an image of at most ``max_pixels`` pixels, same aspect ratio, never upscaled.

        With ``multiple_of`` (e.g. a vision encoder's patch size), both sides are rounded down to a
        multiple of it (but never below one multiple). Returns ``self`` when nothing needs to change.
        """
        target = fit_size(self.width, self.height, max_pixels, multiple_of=multiple_of)
        if target == self.size:
            return self
        if self._data is not None:
            source = _decode.decode_rgb(
                self._data, self.name, self.limits, frame=self._frame, at_least=target
            )
        else:
            source = self.to_pil()
        resized = source.resize(target, PILImage.Resampling.LANCZOS, reducing_gap=3.0)
        return Image(name=self.name, limits=self.limits, pil=resized)

    def encode(
        self, format: str = "PNG", *, quality: int = 90, max_pixels: int | None = None
    ) -> EncodedImage:
        """Encode to PNG, JPEG or WebP (metadata such as EXIF/GPS is not carried over).

        Args:
            format: ``"PNG"``, ``"JPEG"`` (``"JPG"``) or ``"WEBP"``.
            quality: JPEG/WebP quality, 1..100.
            max_pixels: downscale first so the result has at most this many pixels.
        """
        fmt = _FORMAT_ALIASES.get(format.upper(), format.upper())
        if fmt not in _ENCODE_FORMATS:
            raise ValueError(f"cannot encode to {format!r}; choose one of {sorted(_ENCODE_FORMATS)}")
        if not 1 <= quality <= 100:
            raise ValueError(f"quality must be within 1..100, got {quality}")
        key = (fmt, quality, max_pixels)
        if key in self._encoded:  # re-asks and retries send the same image again
            return self._encoded[key]
        image = self.resized_to_budget(max_pixels) if max_pixels is not None else self
        pil = image.to_pil()
        options: dict[str, Any] = {}
        if fmt == "JPEG":
            options = {"quality": quality, "optimize": False}
        elif fmt == "WEBP":
            options = {"quality": quality, "method": 4}
        else:
            # Level 3: on rendered pages as fast as level 1 and no larger; level 6 took twice as long
            # for a bigger file (docs/benchmarks/media.md).
            options = {"compress_level": 3}
        buffer = io.BytesIO()
        pil.save(buffer, format=fmt, **options)
        encoded = EncodedImage(buffer.getvalue(), _ENCODE_FORMATS[fmt], pil.width, pil.height)
        if len(self._encoded) >= 2:
            self._encoded.pop(next(iter(self._encoded)))
        self._encoded[key] = encoded
        return encoded

    def __repr__(self) -> str:
        return f"Image({self.name!r}, {self.format}, {self.width}x{self.height})"


def fit_size(width: int, height: int, max_pixels: int, *, multiple_of: int = 1) -> tuple[int, int]:
    """The largest (w, h) with the aspect ratio of ``width x height``, ``w*h <= max_pixels``, no upscaling.

    Both sides are rounded down to a multiple of ``multiple_of`` (at least one multiple each).
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    w = max(1, math.floor(width * scale))
    h = max(1, math.floor(height * scale))
    if w * h > max_pixels:  # float rounding at the boundary, or a side clamped up to 1 pixel
        if w >= h:
            w = max(1, max_pixels // h)
        else:
            h = max(1, max_pixels // w)
    if multiple_of > 1:
        w = max(multiple_of, w // multiple_of * multiple_of)
        h = max(multiple_of, h // multiple_of * multiple_of)
    return w, h


__all__ = ["EncodedImage", "Image", "fit_size"]
