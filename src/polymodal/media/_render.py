"""Render PDFs in reusable worker processes, bounded by ``limits.render_seconds``.

A worker (:mod:`polymodal.media._render_worker`) renders a whole document per call and streams back raw RGB
pixels per page through a bounded queue (a slow consumer holds the worker back rather than piling pages up
in memory); it is reused for the next document. A worker that times out, crashes, speaks garbage or is
abandoned mid-document is killed and replaced by a fresh one on the next call. Worker failures are
translated into :class:`InputError` here, in one place.
"""

from __future__ import annotations

import atexit
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.errors import InputError
from polymodal.media import _render_worker as wire
from polymodal.media.limits import Limits

#: The command that starts a worker. ``-P`` keeps the worker's own folder off ``sys.path``.
WORKER_COMMAND: tuple[str, ...] = (sys.executable, "-P", str(Path(wire.__file__).resolve()))
_KILL_WAIT_SECONDS = 5.0
_QUEUED_FRAMES = 4  # pages read ahead of the consumer


@dataclass(frozen=True)
class RenderedPage:
    """One page as the worker returned it: raw RGB pixels plus what the PDF says about the page."""

    number: int
    pixels: bytes | bytearray  # width * height * 3 bytes, rows top to bottom
    width: int
    height: int
    width_pt: float
    height_pt: float
    dpi: float
    text: str


class _Timeout(Exception):
    pass


class _Broken(Exception):
    pass


class _Worker:
    """One worker process, with a reader thread that turns its stdout into a queue of frames."""

    def __init__(self, command: Sequence[str]) -> None:
        self.process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=sys.platform != "win32",  # Ctrl+C goes to the parent, which cleans up
        )
        self.max_payload = 0
        self.finished_request = True  # False while a request is in flight
        self._replies: queue.Queue[tuple[dict[str, Any], bytearray] | BaseException] = queue.Queue(
            maxsize=_QUEUED_FRAMES
        )
        self._reader = threading.Thread(target=self._read_loop, name="polymodal-render-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def _read_loop(self) -> None:
        assert self.process.stdout is not None
        try:
            while True:
                self._replies.put(wire.read_frame(self.process.stdout, max_payload=lambda: self.max_payload))
        except BaseException as exc:  # EOF, protocol error, closed pipe: all end this worker
            self._replies.put(exc)

    def send(self, header: dict[str, Any], payload: bytes) -> None:
        """Write a request without blocking the caller (a stuck worker cannot stall the write)."""

        def write() -> None:
            try:
                assert self.process.stdin is not None
                wire.write_frame(self.process.stdin, header, payload)
            except (OSError, ValueError):
                pass  # the worker died; the reader reports it

        threading.Thread(target=write, name="polymodal-render-writer", daemon=True).start()

    def receive(self, budget: list[float]) -> tuple[dict[str, Any], bytearray]:
        """Next reply, charging the wait to ``budget[0]`` seconds; raises _Timeout or _Broken."""
        started = time.monotonic()
        try:
            item = self._replies.get(timeout=max(budget[0], 0.0))
        except queue.Empty:
            raise _Timeout from None
        finally:
            budget[0] -= time.monotonic() - started
        if isinstance(item, BaseException):
            raise _Broken(item)
        return item

    def exit_status(self) -> int | None:
        """The exit code once the process has ended (waits briefly)."""
        try:
            return self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the process and reap it."""
        if self.alive:
            self.process.kill()
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=_KILL_WAIT_SECONDS)
        # Unblock the reader thread (it may be waiting to queue a page) so it reaches EOF and ends.
        deadline = time.monotonic() + _KILL_WAIT_SECONDS
        while self._reader.is_alive() and time.monotonic() < deadline:
            with suppress(queue.Empty):
                self._replies.get(timeout=0.05)
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def close(self) -> None:
        """Ask the worker to exit by closing its stdin; kill it if it does not."""
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=2.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class RenderPool:
    """A small pool of reusable PDF worker processes (at most ``max_workers`` at once)."""

    def __init__(self, *, max_workers: int = 2, command: Sequence[str] = WORKER_COMMAND) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.command = tuple(command)
        self._slots = threading.BoundedSemaphore(max_workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (idle and busy)."""
        with self._lock:
            return [w.pid for w in [*self._idle, *self._busy] if w.alive]

    @contextmanager
    def _lease(self) -> Iterator[_Worker]:
        self._slots.acquire()
        worker: _Worker | None = None
        try:
            with self._lock:
                while self._idle and worker is None:
                    candidate = self._idle.pop()
                    if candidate.alive:
                        worker = candidate
                    else:
                        candidate.kill()
            if worker is None:
                worker = _Worker(self.command)
            with self._lock:
                self._busy.add(worker)
            try:
                yield worker
            finally:
                # Reuse a worker only when it answered its request to the end (an error reply included);
                # one that timed out, crashed or was abandoned mid-document is killed.
                reusable = worker.finished_request and worker.alive
                with self._lock:
                    self._busy.discard(worker)
                    if reusable:
                        self._idle.append(worker)
                if not reusable:
                    worker.kill()
        finally:
            self._slots.release()

    def _request(
        self, op: dict[str, Any], data: bytes, source: str, limits: Limits
    ) -> Generator[tuple[dict[str, Any], bytearray], None, None]:
        """Send one request and yield its replies until a terminal one; translates every failure."""
        budget = [float(limits.render_seconds)]
        with self._lease() as worker:
            worker.max_payload = 3 * limits.max_pixels  # one RGB page at the largest size allowed
            worker.finished_request = False
            worker.send(op, data)
            try:
                while True:
                    header, payload = worker.receive(budget)
                    kind = header.get("type")
                    worker.finished_request = kind in ("done", "info", "error")
                    if kind == "error":
                        raise _translate_error(header, source, limits)
                    yield header, payload
                    if kind in ("done", "info"):
                        return
            except _Timeout:
                raise InputError(
                    source,
                    f"rendering did not finish within {limits.render_seconds:g} s; the renderer was stopped",
                    limit=f"render_seconds={limits.render_seconds:g}",
                ) from None
            except _Broken as exc:
                worker.finished_request = False
                worker.kill()
                cause = exc.args[0] if exc.args else exc
                if isinstance(cause, wire.ProtocolError):
                    raise InputError(source, f"PDF renderer sent invalid output ({cause})") from None
                raise InputError(
                    source, f"PDF renderer crashed (exit status {worker.exit_status()})"
                ) from None

    def page_count(self, data: bytes, source: str, limits: Limits) -> int:
        """Number of pages, read without rendering."""
        with closing(self._request({"op": "info"}, data, source, limits)) as replies:
            for header, _ in replies:
                if header.get("type") == "info":
                    return _as_int(header.get("pages"), source)
        raise InputError(source, "PDF renderer gave no page count")

    def render(
        self,
        data: bytes,
        source: str,
        limits: Limits,
        *,
        dpi: float | None = None,
        max_pixels: int | None = None,
    ) -> Iterator[RenderedPage]:
        """Render every page (refusing documents over ``limits.max_pages``), streaming them as they come."""
        op = {
            "op": "render",
            "dpi": dpi,
            "max_pixels": max_pixels,
            "max_dpi": limits.max_dpi,
            "limit_pixels": limits.max_pixels,
            "max_pages": limits.max_pages,
            "text": True,
        }
        with closing(self._request(op, data, source, limits)) as replies:
            for header, payload in replies:
                if header.get("type") != "page":
                    continue
                yield RenderedPage(
                    number=_as_int(header.get("number"), source),
                    pixels=payload,
                    width=_as_int(header.get("width"), source),
                    height=_as_int(header.get("height"), source),
                    width_pt=_as_float(header.get("width_pt"), source),
                    height_pt=_as_float(header.get("height_pt"), source),
                    dpi=_as_float(header.get("dpi"), source),
                    text=str(header.get("text", "")),
                )

    def close(self) -> None:
        """Stop every idle worker (busy ones are stopped when their call ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


def _as_int(value: Any, source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InputError(source, f"PDF renderer sent an invalid number {value!r}")


def _as_float(value: Any, source: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise InputError(source, f"PDF renderer sent an invalid number {value!r}")


def _translate_error(header: dict[str, Any], source: str, limits: Limits) -> InputError:
    kind, message = header.get("kind"), str(header.get("message", ""))
    if kind == "password":
        return InputError(source, f"encrypted PDF: a password is required to open it ({message})")
    if kind == "format":
        return InputError(source, f"corrupt or truncated PDF ({message})")
    if kind == "too_many_pages":
        return InputError(
            source, f"{message}; refusing rather than truncating", limit=f"max_pages={limits.max_pages}"
        )
    if kind == "page":
        return InputError(source, f"cannot render {message}")
    return InputError(source, f"PDF renderer failed ({message})")


_default_pool: RenderPool | None = None
_default_lock = threading.Lock()


def default_pool() -> RenderPool:
    """The process-wide pool, created on first use and closed at interpreter exit."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = RenderPool()
            atexit.register(_default_pool.close)
        return _default_pool


__all__ = ["WORKER_COMMAND", "RenderPool", "RenderedPage", "default_pool"]
