"""One pipeline at a time per data root.

``run``, and each step that writes the pipeline's tables (etl, materialize, build-dataset, train, promote), holds
an exclusive ``flock`` on ``<root>/.modelsvc.lock`` while it runs. A second one exits 75 at once, naming the
holder (host, pid, start time and command) read from the file. The kernel releases the lock of a process that dies
(even of SIGKILL), so a dead holder never blocks anyone: the next taker finds its stale record, says so in the log,
and takes over. Re-entrant within one process (``run`` holds it while its steps run).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from modelsvc.errors import CannotCreateError, RetryableError

LOCK_FILE = ".modelsvc.lock"
log = logging.getLogger(__name__)
_held: dict[Path, list[Any]] = {}  # lock path -> [open file, depth]


class LockHolder(BaseModel):
    host: str
    pid: int
    started: datetime
    command: str

    def describe(self) -> str:
        return f"{self.command!r} (host {self.host}, pid {self.pid}, started {self.started:%Y-%m-%dT%H:%M:%SZ})"


class LockHeldError(RetryableError):
    """Another modelsvc works on the same data root: retry when it is done (exit 75)."""


def lock_path(settings: Any) -> Path:
    """The lock file in ``paths.state`` (the root when local; a local folder of its own when the root is a URI)."""
    return Path(settings.paths.resolve("state")) / LOCK_FILE


def holder(settings: Any) -> LockHolder | None:
    """The record of the current (or last, if it died) holder, if any."""
    return _read(lock_path(settings))


@contextmanager
def data_root_lock(settings: Any, what: str) -> Iterator[LockHolder]:
    """Hold the data root's lock while the block runs; raise LockHeldError (75) at once when another process
    holds it."""
    path = lock_path(settings)
    if path in _held:
        _held[path][1] += 1
        try:
            yield _held[path][2]
        finally:
            _held[path][1] -= 1
        return
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    except OSError as exc:
        raise CannotCreateError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        current = _read(path)
        f.close()
        who = current.describe() if current else "another modelsvc process"
        raise LockHeldError(f"data root {path.parent} is busy: {who} holds {path}; retry when it is done",
                            hint="one pipeline at a time per data root") from None
    stale = _read(path)
    if stale is not None:
        log.warning("taking over the lock %s from %s, which ended without releasing it", path, stale.describe())
    me = LockHolder(host=socket.gethostname(), pid=os.getpid(), started=datetime.now(timezone.utc),
                    command=what or " ".join(sys.argv))
    f.seek(0)
    f.truncate()
    f.write(me.model_dump_json())
    f.flush()
    _held[path] = [f, 1, me]
    try:
        yield me
    finally:
        _held.pop(path, None)
        with suppress(OSError):
            f.seek(0)
            f.truncate()  # an empty file: released cleanly (the file stays: unlinking it races other takers)
        f.close()


def _read(path: Path) -> LockHolder | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        return LockHolder.model_validate(json.loads(text))
    except ValueError:
        return None
