"""The pipeline's interruption contract: data frames are cancelled, system frames survive, order is kept."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from polymodal.backends.speech import Transcript
from polymodal.pipelines.voice.frames import (
    DataFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    SpeechStartedFrame,
    StartFrame,
    SystemFrame,
    TranscriptFrame,
)
from polymodal.pipelines.voice.processor import Emit, Pipeline


@dataclass(frozen=True, kw_only=True)
class Work(DataFrame):
    n: int


@dataclass(frozen=True, kw_only=True)
class Note(SystemFrame):
    n: int


class Slow:
    """Takes ``delay`` seconds per Work frame; records what it finished and what was cancelled."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.finished: list[int] = []
        self.cancelled: list[int] = []
        self.seen: list[str] = []

    async def process(self, frame: Frame, emit: Emit) -> None:
        self.seen.append(type(frame).__name__)
        if isinstance(frame, Work):
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled.append(frame.n)
                raise
            self.finished.append(frame.n)
        emit(frame)


class Collect:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def process(self, frame: Frame, emit: Emit) -> None:
        self.frames.append(frame)
        emit(frame)


async def test_interruption_cancels_queued_and_running_data_frames_but_keeps_system_frames() -> None:
    slow, tail = Slow(delay=0.2), Collect()
    pipeline = Pipeline([slow, tail])
    runner = asyncio.create_task(pipeline.run())
    pipeline.put(StartFrame())
    for n in range(3):
        pipeline.put(Work(n=n))
    pipeline.put(Note(n=1))
    pipeline.put(Work(n=3))
    pipeline.put(Note(n=2))
    await asyncio.sleep(0.05)  # Work 0 is in flight
    started = asyncio.get_running_loop().time()
    pipeline.put(InterruptionFrame(turn_id=1, detected_at=0.0))
    pipeline.put(Work(n=4))  # after the interruption: a new reply, processed normally
    pipeline.put(EndFrame())
    await asyncio.wait_for(runner, 5)
    assert slow.cancelled == [0]
    assert slow.finished == [4]
    names = [
        type(f).__name__ if not isinstance(f, Work | Note) else f"{type(f).__name__}{f.n}"
        for f in tail.frames
    ]
    # the interruption overtakes the queued notes; the notes keep their order; no stale work gets through
    assert names == ["StartFrame", "InterruptionFrame", "Note1", "Note2", "Work4", "EndFrame"]
    assert pipeline.dropped_frames == 3  # Work 1, 2, 3 never ran
    assert asyncio.get_running_loop().time() - started < 0.5  # Work 4 only, not the cancelled backlog


async def test_interruption_does_not_cancel_a_system_frame_in_flight() -> None:
    class SlowSystem:
        def __init__(self) -> None:
            self.done: list[str] = []

        async def process(self, frame: Frame, emit: Emit) -> None:
            if isinstance(frame, TranscriptFrame):
                await asyncio.sleep(0.1)
                self.done.append(frame.transcript.text)
            emit(frame)

    stage, tail = SlowSystem(), Collect()
    pipeline = Pipeline([stage, tail])
    runner = asyncio.create_task(pipeline.run())
    pipeline.put(TranscriptFrame(turn_id=1, transcript=Transcript(text="keep me")))
    await asyncio.sleep(0.02)
    pipeline.put(InterruptionFrame(turn_id=2, detected_at=0.0))
    pipeline.put(EndFrame())
    await asyncio.wait_for(runner, 5)
    assert stage.done == ["keep me"]
    # the interruption overtakes the slow system frame (it is broadcast down the line), which still arrives
    assert [type(f).__name__ for f in tail.frames] == ["InterruptionFrame", "TranscriptFrame", "EndFrame"]


async def test_an_interruption_reaches_every_stage_at_once_and_each_processor_sees_it_once() -> None:
    class Busy(Slow):
        pass

    stages = [Busy(delay=5.0), Busy(delay=5.0), Busy(delay=5.0)]
    tail = Collect()
    pipeline = Pipeline([*stages, tail])
    runner = asyncio.create_task(pipeline.run())
    # park one long data frame in flight in each of the three stages
    pipeline._stages[0].put(Work(n=0))
    pipeline._stages[1].put(Work(n=1))
    pipeline._stages[2].put(Work(n=2))
    await asyncio.sleep(0.05)
    pipeline.put(InterruptionFrame(turn_id=1, detected_at=0.0))
    await asyncio.sleep(0)  # one loop step: every in-flight call is already cancelled
    assert [s.cancelled for s in stages] == [[0], [1], [2]]
    pipeline.put(EndFrame())
    await asyncio.wait_for(runner, 5)
    assert [s.seen.count("InterruptionFrame") for s in stages] == [1, 1, 1]
    assert [type(f).__name__ for f in tail.frames] == ["InterruptionFrame", "EndFrame"]


async def test_frames_flow_in_order_through_several_stages() -> None:
    first, second, tail = Collect(), Collect(), Collect()
    pipeline = Pipeline([first, second, tail])
    runner = asyncio.create_task(pipeline.run())
    sent: list[Frame] = [SpeechStartedFrame(turn_id=1, t=0.1)] + [
        LLMTextFrame(turn_id=1, text=str(i)) for i in range(20)
    ]
    for frame in sent:
        pipeline.put(frame)
    pipeline.put(EndFrame())
    await asyncio.wait_for(runner, 5)
    assert tail.frames[:-1] == sent


async def test_a_processor_error_stops_the_pipeline_and_is_raised() -> None:
    class Broken:
        async def process(self, frame: Frame, emit: Emit) -> None:
            if isinstance(frame, Work):
                raise RuntimeError("boom")
            emit(frame)

    pipeline = Pipeline([Broken(), Collect()])
    runner = asyncio.create_task(pipeline.run())
    pipeline.put(Work(n=1))
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(runner, 5)


def test_a_pipeline_needs_processors() -> None:
    with pytest.raises(ValueError):
        Pipeline([])
