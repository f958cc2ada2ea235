"""The MLflow side of a training (its run, its epochs, its model), in a child process beside the training.

Importing MLflow, opening the experiment, creating the run and logging the model took about 5 s of an idle 14 s
``modelsvc train`` (docs/performance.md, "Cutting `train` and `run`"), all on the critical path, although none of it
needs the training's process. A :class:`ChildTracker` does it in a child process, on the other core: it imports
MLflow and opens the experiment while this process reads the data and imports torch and Ray, creates the run, and
prepares the model's logging (imports, the validation split, the input example) while the epochs run. When the
weights arrive only the model itself is left to log. ``modelsvc run`` keeps one child for all its steps and also
runs ``evaluate``, ``promote`` and the production look-up in it (:data:`CALLABLE`): its own process never imports
MLflow.

The child ignores Ctrl-C (this process decides what an interrupt does to the run) and runs in its own session. If
this process dies without saying how the run ended, the child sees its end of the pipe close and marks the open
run FAILED: no run stays RUNNING. An error in the child comes back as the same ``ModelsvcError`` (exit code and
all); an unexpected one as a ``ModelsvcError`` naming its type.

:class:`InlineTracker` runs the same :class:`TrackerCore` in this process: when ``mlflow.child_process`` says so,
when MLflow is imported here already (a child would import it a second time: a test, a notebook), or when no child
can be started.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelsvc import errors
from modelsvc.config import Settings
from modelsvc.dataset import DatasetManifest
from modelsvc.errors import ModelsvcError

_NO_REPLY = frozenset({"start", "epoch"})  # ops answered only through the next op's reply (an error is kept)


# what TrackerCore.call runs: module:function -> whether it takes a reporter
CALLABLE: dict[str, tuple[str, ...]] = {
    "modelsvc.evaluation:evaluate": ("reporter",),
    "modelsvc.registry:promote": (),
    "modelsvc.registry:production_run_id": (),
}


class _LogRecorder:
    """A reporter that keeps the log lines (sent back with the result) and drops the progress."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        from modelsvc.progress import NULL

        with NULL.task(description, total) as task:
            yield task

    def log(self, message: str) -> None:
        self.lines.append(message)


class TrackerCore:
    """The MLflow calls of one training, in order: :meth:`start`, :meth:`lookup`, :meth:`open`, :meth:`epoch`
    (any number), then :meth:`finish` or :meth:`end`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: Any = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None  # the run this training has open (ended by finish or end)
        self.logging: Any = None  # run_log.ModelLogging, prepared while the epochs run

    def start(self) -> None:
        """Import MLflow, open the store (creating a new local one) and the experiment."""
        from modelsvc.tracking import ensure_experiment, mlflow_client

        self.experiment_id = ensure_experiment(self.settings)
        self.client = mlflow_client(self.settings)

    def lookup(self, run_id: str | None, has_result: bool) -> dict[str, Any]:
        """The run a rerun continues (None: a new one), and whether it already finished."""
        from modelsvc.training.run_log import existing_run

        found = existing_run(self.client, run_id)
        finished = bool(found and has_result and self.client.get_run(found).info.status == "FINISHED")
        return {"experiment_id": self.experiment_id, "run_id": found, "finished": finished}

    def open(self, run_name: str, manifest: DatasetManifest, run_id: str | None,
             preprocessor: dict[str, Any]) -> str:
        """Create the run (``run_id`` None) or mark the one it continues RUNNING; then prepare the model's
        logging (after the reply, in :meth:`after_open`)."""
        from modelsvc.training.run_log import ModelLogging, create_run
        from modelsvc.training.trainer import end_orphaned_runs

        assert self.experiment_id is not None
        end_orphaned_runs(self.client, self.experiment_id, run_name, keep=run_id)
        if run_id is None:
            opened: list[str] = []
            try:
                run_id = create_run(self.client, self.settings, self.experiment_id, run_name, manifest, opened)
            finally:
                self.run_id = opened[0] if opened else None  # a failed create ends the run it created
        else:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        from modelsvc.training.preprocessing import Preprocessor

        self.logging = ModelLogging(manifest, Preprocessor.from_dict(preprocessor))
        return run_id

    def after_open(self) -> None:
        """What needs no weights of the model's logging, while the epochs run. A failure here shows at finish."""
        if self.logging is not None:
            with contextlib.suppress(Exception):
                self.logging.prepare()

    def epoch(self, data: dict[str, Any]) -> None:
        """Log one epoch's metrics (a failure only costs the epoch: finish logs any epoch still missing)."""
        from modelsvc.training.run_log import log_epochs

        if self.run_id is not None:
            with contextlib.suppress(Exception):
                log_epochs(self.client, self.run_id, [data])

    def finish(self, state: dict[str, Any], history: list[Any], best: Any) -> None:
        """Log the epochs still missing and the best model; the run ends FINISHED."""
        from modelsvc.training.run_log import log_epochs

        assert self.run_id is not None, "finish before open"
        assert self.logging is not None
        log_epochs(self.client, self.run_id, state["history"])
        self.logging.finish(self.client, self.run_id, self.settings.model, state, history, best)
        self.run_id = None

    def call(self, target: str, kwargs: dict[str, Any]) -> tuple[Any, list[str]]:
        """Call the MLflow-bound library function ``target`` (``module:function`` of :data:`CALLABLE`) with
        ``settings`` and ``kwargs``; returns its result and the lines it logged (``modelsvc run``'s evaluate and
        promote, where the child has MLflow and the model's modules imported already)."""
        import importlib

        if target not in CALLABLE:
            raise ValueError(f"not a function the tracker calls: {target}")
        module, name = target.split(":")
        fn = getattr(importlib.import_module(module), name)
        lines: list[str] = []
        if "reporter" in CALLABLE[target] and "reporter" not in kwargs:
            kwargs = {**kwargs, "reporter": _LogRecorder(lines)}
        return fn(self.settings, **kwargs), lines

    def end(self, status: str) -> None:
        """End the open run (if any) with ``status``: FAILED, or KILLED after an interrupt."""
        run_id, self.run_id = self.run_id, None
        if run_id is not None and self.client is not None:
            with contextlib.suppress(Exception):
                self.client.set_terminated(run_id, status)


class RunTracker:
    """What ``train`` calls; each call runs :class:`TrackerCore`'s method of the same name, here or in the child.
    Ops without a result return at once; an error of theirs is raised by the next op that waits for a result."""

    def call(self, op: str, *args: Any) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self.call("start")

    def lookup(self, run_id: str | None, has_result: bool) -> dict[str, Any]:
        return dict(self.call("lookup", run_id, has_result))

    def open(self, run_name: str, manifest: DatasetManifest, run_id: str | None, preprocessor: dict[str, Any]) -> str:
        return str(self.call("open", run_name, manifest, run_id, preprocessor))

    def epoch(self, data: dict[str, Any]) -> None:
        self.call("epoch", data)

    def finish(self, state: dict[str, Any], history: list[Any], best: Any) -> None:
        self.call("finish", state, history, best)

    def end(self, status: str) -> None:
        with contextlib.suppress(Exception):
            self.call("end", status)

    def run(self, target: str, reporter: Any = None, /, **kwargs: Any) -> Any:
        """:meth:`TrackerCore.call`: the function's result; the lines it logged go to ``reporter``."""
        result, lines = self.call("call", target, kwargs)
        for line in lines:
            if reporter is not None:
                reporter.log(line)
        return result

    def close(self) -> None:
        """Release the child (if any); a run still open is ended FAILED."""


class InlineTracker(RunTracker):
    """:class:`TrackerCore` in this process."""

    def __init__(self, settings: Settings) -> None:
        self.core = TrackerCore(settings)
        self._kept: BaseException | None = None

    def call(self, op: str, *args: Any) -> Any:
        if op in _NO_REPLY:
            if self._kept is None:
                try:
                    getattr(self.core, op)(*args)
                except Exception as exc:
                    self._kept = exc
            return None
        if self._kept is not None:
            kept, self._kept = self._kept, None
            raise kept
        result = getattr(self.core, op)(*args)
        if op == "open":
            self.core.after_open()
        return result

    def run(self, target: str, reporter: Any = None, /, **kwargs: Any) -> Any:
        if reporter is not None and "reporter" in CALLABLE.get(target, ()):
            kwargs["reporter"], reporter = reporter, None  # in this process: the live progress too
        return super().run(target, reporter, **kwargs)

    def close(self) -> None:
        self.core.end("FAILED")


class ChildTracker(RunTracker):
    """:class:`TrackerCore` in a child process, over a socket pair (``multiprocessing.connection`` framing)."""

    def __init__(self, settings: Settings) -> None:
        from multiprocessing.connection import Connection

        mine, theirs = socket.socketpair()
        self._stderr = tempfile.TemporaryFile(prefix="modelsvc-tracker-")  # noqa: SIM115 - closed by close()
        # this process's modelsvc, and nothing else of its sys.path: a test session or Ray puts folders there
        # (copies of packages, working directories) that a fresh interpreter must not import from; -P: not the
        # working directory first on sys.path either
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "modelsvc.training.tracker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=self._stderr, start_new_session=True)  # Ctrl-C goes to this process only
        except OSError:
            mine.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        self._lock = threading.Lock()
        self._open = False  # a run opened through the child and not yet finished or ended
        self._awaiting: list[str] = []  # ops sent whose reply is not read yet
        _send(self.conn, ("settings", settings))

    def call(self, op: str, *args: Any) -> Any:
        with self._lock:
            try:
                _send(self.conn, (op, args))
            except OSError:
                raise self._died() from None
            if op in _NO_REPLY:
                return None
            # replies come in the order of the ops; one an interrupt left unread is read (and dropped) first
            self._awaiting.append(op)
            while True:
                kind, value = self._reply()
                done = self._awaiting.pop(0)
                if done == "open":
                    self._open = self._open or kind == "ok"
                elif done in ("finish", "end"):
                    self._open = False
                if not self._awaiting:
                    break
        if kind == "error":
            raise _rebuild(value)
        return value

    def _reply(self) -> tuple[str, Any]:
        while not self.conn.poll(0.2):  # stays interruptible; notices a child that died
            if self.proc.poll() is not None and not self.conn.poll(0):
                raise self._died()
        try:
            kind, value = _recv(self.conn)
        except (EOFError, OSError):
            raise self._died() from None
        return str(kind), value

    def _died(self) -> ModelsvcError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return ModelsvcError(f"the MLflow logging process of this training exited ({self.proc.returncode}): "
                             f"{lines[-1] if lines else 'no output'}",
                             hint="set mlflow.child_process to never (MODELSVC_MLFLOW__CHILD_PROCESS=never) to log "
                                  "from the training's own process")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()  # the child ends a run still open (FAILED) and exits
        if not self._open:  # nothing left to do there: every op that waits has returned (an unused child may
            self.proc.kill()  # still be importing MLflow; creating a local store is atomic)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def start_tracker(settings: Settings) -> RunTracker:
    """A started tracker (see the module doc for which kind); it imports MLflow and opens the experiment now."""
    mode = settings.mlflow.child_process
    tracker: RunTracker | None = None
    if mode == "always" or (mode == "auto" and "mlflow" not in sys.modules):
        with contextlib.suppress(OSError):
            tracker = ChildTracker(settings)
    tracker = tracker or InlineTracker(settings)
    tracker.start()
    return tracker


# -- errors across the pipe -------------------------------------------------------------------------------------
def _describe(settings: Settings | None, exc: BaseException) -> tuple[str, str, str | None, int]:
    """(class name, message, hint, exit code) of ``exc``, as ``train`` would raise it in-process."""
    if not isinstance(exc, ModelsvcError) and settings is not None:
        from modelsvc.tracking import tracking_error

        exc = tracking_error(settings, exc) or exc
    if isinstance(exc, ModelsvcError):
        return type(exc).__name__, exc.message, exc.hint, exc.exit_code
    return "ModelsvcError", f"{type(exc).__name__}: {exc}", None, ModelsvcError.exit_code


def _rebuild(value: tuple[str, str, str | None, int]) -> ModelsvcError:
    name, message, hint, code = value
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ModelsvcError)):
        cls = ModelsvcError
    exc = cls(message, hint=hint)
    if exc.exit_code != code:
        exc.exit_code = code
    return exc


def _send(conn: Any, message: Any) -> None:
    # plain pickle: multiprocessing's own pickler would hand sockets and file descriptors over through its
    # resource sharer, which this pair of processes does not run
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn: Any) -> Any:
    return pickle.loads(conn.recv_bytes())


# -- the child --------------------------------------------------------------------------------------------------
def serve(conn: Any) -> None:
    """The child's loop: run each op in order, answer the ops that wait; at the end of the pipe end any open run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    kind, settings = _recv(conn)
    assert kind == "settings"
    core = TrackerCore(settings)
    kept: BaseException | None = None
    try:
        while True:
            try:
                op, args = _recv(conn)
            except EOFError:  # the training's process is gone
                break
            if op in _NO_REPLY:
                if kept is None:
                    try:
                        getattr(core, op)(*args)
                    except Exception as exc:
                        kept = exc
                continue
            if kept is not None:
                _send(conn, ("error", _describe(settings, kept)))
                kept = None
                continue
            try:
                result = getattr(core, op)(*args)
            except Exception as exc:
                _send(conn, ("error", _describe(settings, exc)))
                continue
            _send(conn, ("ok", result))
            if op == "open":
                core.after_open()  # while the epochs run
    finally:
        core.end("FAILED")


def main() -> None:
    from multiprocessing.connection import Connection

    conn = Connection(int(sys.argv[1]))
    try:
        serve(conn)
    finally:
        conn.close()
        # the training waits for this exit: the interpreter's last collections would walk every object of MLflow
        # and torch (about 1.5 s); frozen, they are left to the OS (atexit handlers still run)
        gc.freeze()


if __name__ == "__main__":
    main()
