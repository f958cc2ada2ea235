"""What the backends' readiness checks share. Each adapter (``modelsvc.warehouse``, ``modelsvc.features.health``,
``modelsvc.tracking``, ``modelsvc.training.ray_runtime``) exposes checks of the form
``check_…(settings, timeout) -> str``: the returned line is an ok row's detail; a check ends otherwise by raising
:class:`CheckOutcome` (warn, skip or fail with a fix), a ``ModelsvcError``, or any exception (a failure named by its
type). ``modelsvc.doctor`` runs them, each in its own thread with a deadline, and renders the table. Checks only
read: nothing is created or migrated.
"""

from __future__ import annotations

import socket
from typing import Literal

from modelsvc.config import mask_uri

Status = Literal["ok", "warn", "fail", "skip"]


class CheckOutcome(Exception):
    """Raised by a check to end with a status other than ok (a plain exception means fail)."""

    def __init__(self, status: Status, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.fix = status, detail, fix


def one_line(exc: BaseException) -> str:
    """An exception as one line, named by its type, URIs' secrets masked."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return mask_uri(f"{type(exc).__name__}: {first}"[:300])


def tcp(host: str, port: int, timeout: float, what: str) -> None:
    """Fail the check when ``host:port`` accepts no TCP connection within ``timeout`` (5 s at most)."""
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return
    except OSError as exc:
        raise CheckOutcome("fail", f"{what} at {host}:{port} is unreachable ({exc.strerror or exc})") from None
