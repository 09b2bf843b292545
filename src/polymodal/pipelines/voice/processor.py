"""Frame processors and the pipeline that runs them.

A processor implements one method, ``process(frame, emit)``: it handles a frame and calls ``emit`` for every
frame it sends on (including the ones it only passes through). The :class:`Pipeline` gives each processor its
own queue and task and enforces the interruption contract of :mod:`~polymodal.pipelines.voice.frames`:

* when a processor emits an :class:`InterruptionFrame`, every stage downstream of it drops its queued
  :class:`DataFrame` s and cancels its ``process`` call in flight if that handles a data frame — at once, in
  the same event loop step, not hop by hop as each stage gets round to it;
* in each stage the interruption then jumps ahead of the queued system frames and is handed to ``process``
  (so a processor can stop background work and record what it stopped); forwarding it on is a no-op for the
  stages that already have it.

A processor that starts background work (a synthesis task, a playback) owns it and must stop it when it sees
the interruption frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from polymodal.pipelines.voice.frames import DataFrame, EndFrame, Frame, InterruptionFrame

#: Sends a frame to the next processor (synchronous: it only enqueues).
Emit = Callable[[Frame], None]


@runtime_checkable
class FrameProcessor(Protocol):
    """One stage of the voice pipeline."""

    async def process(self, frame: Frame, emit: Emit) -> None:
        """Handle ``frame``; ``emit`` whatever goes downstream (unhandled frames should be passed on)."""
        ...


class _Stage:
    """A processor with its queue and its task."""

    def __init__(self, processor: FrameProcessor, downstream: Emit, next_stage: _Stage | None) -> None:
        self.processor = processor
        self.downstream = downstream
        self.next_stage = next_stage
        self.last_interruption: InterruptionFrame | None = None
        self.queue: deque[Frame] = deque()
        self.wakeup = asyncio.Event()
        self.current: asyncio.Task[None] | None = None
        self.current_frame: Frame | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        if isinstance(frame, InterruptionFrame):
            if frame is self.last_interruption:
                return  # already broadcast to this stage
            self.last_interruption = frame
            kept = [f for f in self.queue if not isinstance(f, DataFrame)]
            self.dropped += len(self.queue) - len(kept)
            self.queue = deque(kept)
            if self.current is not None and isinstance(self.current_frame, DataFrame):
                self.current.cancel()
            self.queue.appendleft(frame)
            if self.next_stage is not None:
                self.next_stage.put(frame)  # the rest of the line stops now, too
        else:
            self.queue.append(frame)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            frame = self.queue.popleft()
            self.current_frame = frame
            self.current = asyncio.create_task(self.processor.process(frame, self.downstream))
            try:
                await asyncio.wait({self.current})
            except asyncio.CancelledError:
                self.current.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.current
                raise
            task, self.current, self.current_frame = self.current, None, None
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if isinstance(frame, EndFrame):
                return


class Pipeline:
    """Processors in a line; frames put at the head flow to the tail and then to ``sink`` (if given).

    ``run()`` runs until an :class:`EndFrame` has passed every processor, or raises the first processor error
    (after cancelling the others).
    """

    def __init__(self, processors: Sequence[FrameProcessor], sink: Emit | None = None) -> None:
        if not processors:
            raise ValueError("a pipeline needs at least one processor")
        self._sink = sink or (lambda frame: None)
        self._stages: list[_Stage] = []
        downstream: Emit = self._sink
        next_stage: _Stage | None = None
        for processor in reversed(processors):
            stage = _Stage(processor, downstream, next_stage)
            self._stages.insert(0, stage)
            downstream, next_stage = stage.put, stage

    def put(self, frame: Frame) -> None:
        """Feed a frame to the first processor."""
        self._stages[0].put(frame)

    @property
    def idle(self) -> bool:
        """True when no stage has a frame queued or in process."""
        return all(not stage.queue and stage.current is None for stage in self._stages)

    @property
    def dropped_frames(self) -> int:
        """Data frames dropped by interruptions so far, over all stages."""
        return sum(stage.dropped for stage in self._stages)

    async def run(self) -> None:
        """Run every stage until the end frame has gone through (see the class docstring)."""
        tasks = [asyncio.create_task(stage.run()) for stage in self._stages]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Emit", "FrameProcessor", "Pipeline"]
