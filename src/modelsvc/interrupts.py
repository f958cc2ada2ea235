"""Ctrl-C and SIGTERM: one exception, one exit status (130 / 143), and the services modelsvc started stopped.

While :func:`handling` is active, SIGINT and SIGTERM raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the
main thread, and the signal is remembered: a library that turns the interrupt into its own error (DuckDB's
``RuntimeError: Query interrupted``, a Ray error) is still recognised as an interrupt by :func:`received`.

Third-party code replaces these handlers when it runs: ``ray.init`` installs ``sys.exit(15)`` for SIGTERM (the
process then aborts with 134 and a stack dump), ``TorchTrainer.fit`` a SIGINT handler that asks the controller to
abort and exits 1. While :func:`handling` is active such replacements are ignored, so the interrupt always reaches
modelsvc, which stops Ray and marks open MLflow runs KILLED (:func:`stop_started_services`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signal, as soon as the watcher thread or the handler sees it
_raised: list[int] = []  # the handler raised Interrupted once
_original_signal = signal.signal


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def received() -> int | None:
    """The first interrupting signal received while :func:`handling` was active, else None."""
    return _received[0] if _received else None


def exit_code(exc: BaseException | None = None) -> int:
    """128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
    signum = received() or (exc.signum if isinstance(exc, Interrupted) else signal.SIGINT)
    return 128 + int(signum)


def is_interrupt(exc: BaseException) -> bool:
    """True for a KeyboardInterrupt, or for any error raised while an interrupt was being handled."""
    return isinstance(exc, KeyboardInterrupt) or received() is not None


_on_signal: list[Callable[[], Any]] = []


def on_signal(callback: Callable[[], Any]) -> None:
    """Call ``callback`` (from a watcher thread) as soon as SIGINT / SIGTERM arrives, e.g. a DuckDB connection's
    ``interrupt``: a Python signal handler only runs when the main thread next executes Python, which a long query
    inside DuckDB may not let it do for a minute. Registered for the duration of the current :func:`handling`."""
    _on_signal.append(callback)


def _watch(fd: int) -> None:
    try:
        _relay(fd)
    finally:
        os.close(fd)


def _relay(fd: int) -> None:
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if not data:  # handling() ended
            return
        signums = [b for b in data if b in SIGNALS]
        if not signums:
            continue
        if not _received:
            _received.append(signums[0])
        for callback in list(_on_signal):
            with suppress(Exception):
                callback()


def _handler(signum: int, frame: Any) -> None:
    if _raised:  # a second signal while cleaning up: the user insists
        os._exit(128 + signum)
    _raised.append(signum)
    if not _received:
        _received.append(signum)
    raise Interrupted(signum)


def _guarded_signal(signum: Any, handler: Any) -> Any:
    """``signal.signal`` while :func:`handling` is active: SIGINT / SIGTERM stay ours."""
    if signum in SIGNALS and threading.current_thread() is threading.main_thread():
        return signal.getsignal(signum)
    return _original_signal(signum, handler)


@contextmanager
def handling() -> Iterator[None]:
    """Install the handlers for the duration of one command (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread() or signal.signal is _guarded_signal:
        yield
        return
    # Ray's C++ core installs a "failure signal handler" in the driver that also catches SIGTERM: it dumps a stack
    # and aborts (exit 134) after our handler ran. Read by ray when it is imported (lazily, later); a user's own
    # setting wins.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    _received.clear()
    _raised.clear()
    _on_signal.clear()
    for s in SIGNALS:
        _original_signal(s, _handler)
    signal.signal = _guarded_signal  # type: ignore[assignment]
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_fd,), name="modelsvc-signals", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # ends the watcher
        _on_signal.clear()
        signal.signal = _original_signal
        for s, h in previous.items():
            with suppress(TypeError, ValueError):
                _original_signal(s, h if h is not None else signal.SIG_DFL)


def stop_started_services(log: Callable[[str], None] | None = None) -> None:
    """After an interrupt: end the MLflow runs this process still has open as KILLED, and stop Ray (the local
    cluster modelsvc started, or this driver's actors and workers on a remote one). Each part is best effort."""
    with suppress(Exception):
        from modelsvc.tracking import end_active_runs

        end_active_runs("KILLED")
    with suppress(Exception):
        from modelsvc.training.ray_runtime import shutdown_ray

        shutdown_ray(log)
