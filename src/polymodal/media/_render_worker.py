"""PDF rendering worker: runs in its own process so a crashing or hanging PDF cannot take the caller down.

Run as a script (``python -P _render_worker.py``); it imports only the standard library, pypdfium2 and
Pillow, so it works wherever the parent's interpreter can import those, whether or not polymodal itself is
on the path. The parent (:mod:`polymodal.media._render`) also imports this module for the frame format and
the DPI rule, which keeps both sides in one place.

Wire format, both directions, on stdin/stdout: a frame is a 4-byte big-endian header length, a UTF-8 JSON
header, an 8-byte big-endian payload length and the payload. No pickle: the parent must be able to read
what a compromised worker sends without running anything it says.

Requests: ``{"op": "info"}`` or ``{"op": "render", ...}`` with the PDF bytes as payload.
Replies: ``info``; ``start`` then one ``page`` per page (payload: raw 8-bit RGB rows, ``width * height * 3``
bytes; encoding a PNG here would cost 3-5x the render itself) then ``done``; or ``error`` with a
``kind`` of ``password``, ``format``, ``too_many_pages``, ``page`` or ``internal``.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import sys
from collections.abc import Callable
from typing import IO, Any

MAX_HEADER_BYTES = 16 * 1024 * 1024
_HEADER_LEN = struct.Struct(">I")
_PAYLOAD_LEN = struct.Struct(">Q")
POINTS_PER_INCH = 72.0


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame."""


def write_frame(stream: IO[bytes], header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    """Write one frame and flush it."""
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    stream.write(_HEADER_LEN.pack(len(encoded)) + encoded + _PAYLOAD_LEN.pack(size))
    if payload:
        stream.write(payload)
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytearray:
    # One preallocated buffer filled in place: a page of pixels is copied once, not once per pipe read.
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = stream.readinto(view[filled:])  # type: ignore[attr-defined]  # IO lacks readinto
        if not count:
            raise EOFError("stream closed mid-frame" if filled else "stream closed")
        filled += count
    return buffer


def read_frame(
    stream: IO[bytes], *, max_payload: int | Callable[[], int]
) -> tuple[dict[str, Any], bytearray]:
    """Read one frame; refuse headers or payloads larger than allowed. Raises EOFError at end of stream.

    ``max_payload`` may be a callable, asked once the payload size is known (the allowance can change
    while a reader is already waiting for the next frame).
    """
    (header_len,) = _HEADER_LEN.unpack(_read_exact(stream, _HEADER_LEN.size))
    if header_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {header_len} bytes")
    try:
        header = json.loads(_read_exact(stream, header_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not an object")
    (payload_len,) = _PAYLOAD_LEN.unpack(_read_exact(stream, _PAYLOAD_LEN.size))
    allowed = max_payload() if callable(max_payload) else max_payload
    if payload_len > allowed:
        raise ProtocolError(f"frame payload of {payload_len} bytes exceeds {allowed}")
    return header, _read_exact(stream, payload_len)


def render_size(width_pt: float, height_pt: float, dpi: float) -> tuple[int, int]:
    """Bitmap size pypdfium2 produces for a page at ``dpi`` (it rounds each side up)."""
    scale = dpi / POINTS_PER_INCH
    return math.ceil(width_pt * scale), math.ceil(height_pt * scale)


def _dpi_to_fit(width_pt: float, height_pt: float, pixels: int) -> float:
    dpi = POINTS_PER_INCH * math.sqrt(pixels / (width_pt * height_pt))
    while dpi > 0:
        w, h = render_size(width_pt, height_pt, dpi)
        if w * h <= pixels:
            return dpi
        dpi *= 0.995
    return dpi


def choose_dpi(
    width_pt: float,
    height_pt: float,
    *,
    dpi: float | None,
    max_pixels: int | None,
    max_dpi: float,
    limit_pixels: int,
    default_dpi: float = 150.0,
) -> float:
    """The render resolution of one page.

    ``dpi`` when given, else the DPI at which the page fits ``max_pixels`` (the model's budget), else
    ``default_dpi``; never above ``max_dpi``, never so high that the page exceeds ``max_pixels`` (when given)
    or the decoding limit ``limit_pixels``.
    """
    if width_pt <= 0 or height_pt <= 0:
        raise ValueError(f"page size {width_pt}x{height_pt} pt")
    if dpi is not None:
        target = dpi
    elif max_pixels is not None:
        target = _dpi_to_fit(width_pt, height_pt, max_pixels)
    else:
        target = default_dpi
    target = min(target, max_dpi)
    if max_pixels is not None:
        target = min(target, _dpi_to_fit(width_pt, height_pt, max_pixels))
    return min(target, _dpi_to_fit(width_pt, height_pt, limit_pixels))


# ---- worker side (runs in the child process) ------------------------------------------------------------


def _error(out: IO[bytes], kind: str, message: str) -> None:
    write_frame(out, {"type": "error", "kind": kind, "message": message})


def _open_document(data: bytes | bytearray, out: IO[bytes]) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(bytes(data))
    except pdfium.PdfiumError as exc:
        password_error = 4  # FPDF_ERR_PASSWORD
        security_error = 5  # FPDF_ERR_SECURITY (unsupported encryption handler)
        code = getattr(exc, "err_code", None)
        kind = "password" if code in (password_error, security_error) else "format"
        _error(out, kind, str(exc))
        return None


def _render(request: dict[str, Any], data: bytes | bytearray, out: IO[bytes]) -> None:
    document = _open_document(data, out)
    if document is None:
        return
    try:
        count = len(document)
        if count > int(request["max_pages"]):
            _error(out, "too_many_pages", f"document has {count} pages")
            return
        write_frame(out, {"type": "start", "pages": count})
        # Draw filled-in AcroForm fields too (they carry the data of many forms); a broken form layer must
        # not stop the page content from rendering.
        with contextlib.suppress(Exception):
            document.init_forms()
        for index in range(count):
            page = document[index]
            try:
                width_pt, height_pt = page.get_size()
                dpi = choose_dpi(
                    width_pt,
                    height_pt,
                    dpi=request.get("dpi"),
                    max_pixels=request.get("max_pixels"),
                    max_dpi=float(request["max_dpi"]),
                    limit_pixels=int(request["limit_pixels"]),
                )
                bitmap = page.render(scale=dpi / POINTS_PER_INCH, rev_byteorder=True, may_draw_forms=True)
                width, height = bitmap.width, bitmap.height
                pixels: bytes | memoryview
                if bitmap.mode == "RGB" and bitmap.stride == width * 3:
                    pixels = memoryview(bitmap.buffer)  # sent as is: no copy
                else:
                    pixels = bitmap.to_pil().convert("RGB").tobytes()
                text = ""
                if request.get("text", True):
                    textpage = page.get_textpage()
                    text = textpage.get_text_range()
                    textpage.close()
                header = {
                    "type": "page",
                    "number": index + 1,
                    "width": width,
                    "height": height,
                    "width_pt": width_pt,
                    "height_pt": height_pt,
                    "dpi": dpi,
                    "text": text,
                }
            except Exception as exc:  # pdfium or Pillow failed on this page: report it, keep serving
                _error(out, "page", f"page {index + 1}: {type(exc).__name__}: {exc}")
                return
            finally:
                page.close()
            write_frame(out, header, pixels)
            del pixels, bitmap
        write_frame(out, {"type": "done"})
    finally:
        document.close()


def _info(data: bytes | bytearray, out: IO[bytes]) -> None:
    document = _open_document(data, out)
    if document is None:
        return
    try:
        write_frame(out, {"type": "info", "pages": len(document)})
    finally:
        document.close()


def main() -> None:
    """Serve requests from stdin until it closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the frame stream
    while True:
        try:
            request, data = read_frame(stdin, max_payload=1 << 40)
        except EOFError:
            return
        try:
            if request.get("op") == "info":
                _info(data, stdout)
            elif request.get("op") == "render":
                _render(request, data, stdout)
            else:
                _error(stdout, "internal", f"unknown op {request.get('op')!r}")
        except Exception as exc:
            _error(stdout, "internal", f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
