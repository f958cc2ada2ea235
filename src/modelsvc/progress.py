"""Progress reporting without printing: the library reports, the CLI renders (rich) or ignores it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Task(Protocol):
    def advance(self, amount: float = 1, **info: Any) -> None: ...

    def update(self, *, completed: float | None = None, total: float | None = None, **info: Any) -> None: ...


class Reporter(Protocol):
    """What a long step is given to report progress; ``NullReporter`` when nobody watches."""

    def task(self, description: str, total: float | None = None) -> Any:  # context manager yielding a Task
        ...

    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1, **info: Any) -> None:
        pass

    def update(self, *, completed: float | None = None, total: float | None = None, **info: Any) -> None:
        pass


class NullReporter:
    """Reports nothing."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


NULL = NullReporter()
