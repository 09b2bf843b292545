"""A progress bar for long batch work (rich), silent when disabled or not on a terminal."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class BatchProgress:
    """Counts finished items, accepted vs rejected, and shows items/s."""

    def __init__(self, total: int, *, enabled: bool, description: str = "extracting") -> None:
        self.total = total
        self.enabled = enabled
        self.accepted = 0
        self.rejected = 0
        self.description = description
        self._started = time.perf_counter()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> BatchProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, status="")
        return self

    def advance(self, accepted: bool) -> None:
        """Record one finished item."""
        if accepted:
            self.accepted += 1
        else:
            self.rejected += 1
        if self._progress is not None and self._task is not None:
            done = self.accepted + self.rejected
            rate = done / max(time.perf_counter() - self._started, 1e-9)
            status = f"ok {self.accepted}  rejected {self.rejected}  {rate:.1f}/s"
            self._progress.update(self._task, advance=1, status=status)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)


__all__ = ["BatchProgress"]
