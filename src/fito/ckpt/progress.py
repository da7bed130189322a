"""A byte-counting progress bar (rich) for long saves, loads and verifications."""
from __future__ import annotations

from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn, TransferSpeedColumn


class ByteProgress:
    def __init__(self, label: str, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), transient=True,
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> "Advance":
        self._progress.start()
        return Advance(self._progress, self._task)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


class Advance:
    """Called with each byte count done; `resize(total)` once the work is known better (a rank of a save
    learns from DCP's plan which replicas it writes, so the bar ends at 100%)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def resize(self, total: int) -> None:
        self._progress.update(self._task, total=total)
