"""Rendering helpers shared by the commands: rich tables on stderr-free stdout, or JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def emit_json(result: BaseModel | Mapping[str, Any] | list[Any]) -> None:
    """Write a result as JSON on stdout (nothing else goes to stdout with --json)."""
    if isinstance(result, BaseModel):
        text = result.model_dump_json(indent=2)
    else:
        text = json.dumps(result, indent=2, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in rows:
        table.add_row(str(k), _fmt(v))
    return table


def rows_table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(_fmt(v) for v in r))
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._p = progress
        self._id = task_id

    def advance(self, amount: float = 1, **info: Any) -> None:
        self._p.update(self._id, advance=amount, info=_info(info))

    def update(self, *, completed: float | None = None, total: float | None = None, **info: Any) -> None:
        kwargs: dict[str, Any] = {"info": _info(info)}
        if completed is not None:
            kwargs["completed"] = completed
        if total is not None:
            kwargs["total"] = total
        self._p.update(self._id, **kwargs)


def _info(info: Mapping[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt(v)}" for k, v in info.items())


class RichReporter:
    """Progress bars on stderr (so --json stdout stays clean) when stderr is a terminal; log lines on stderr
    unless quiet, time-stamped (UTC) when stderr is not a terminal, e.g. in a cron or CI log."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bars = not quiet and err_console.is_terminal

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        from modelsvc.progress import _NullTask

        if not self.bars:
            yield _NullTask()
            return
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
        )
        with progress:
            tid = progress.add_task(description, total=total, info="")
            yield _RichTask(progress, tid)

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if err_console.is_terminal:
            err_console.print(message)
        else:
            from datetime import datetime, timezone

            from rich.text import Text

            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            sys.stderr.write(f"{stamp} {Text.from_markup(message).plain}\n")
            sys.stderr.flush()
