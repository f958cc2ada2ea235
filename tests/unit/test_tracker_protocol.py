"""The parent's side of the tracker's pipe (``modelsvc.training.tracker.ChildTracker.call``) against a fake pipe:
replies are matched to ops in order, one an interrupt left unread is dropped, and errors come back as ours."""

from __future__ import annotations

import pickle

import pytest

from modelsvc.errors import ServiceUnavailableError
from modelsvc.training.tracker import ChildTracker, _describe, _rebuild


class _Pipe:
    def __init__(self) -> None:
        self.sent: list = []
        self.replies: list = []
        self.interrupt_next_poll = False

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(pickle.loads(data))

    def poll(self, timeout: float = 0) -> bool:
        if self.interrupt_next_poll:
            self.interrupt_next_poll = False
            raise KeyboardInterrupt
        return bool(self.replies)

    def recv_bytes(self) -> bytes:
        return pickle.dumps(self.replies.pop(0))


class _Proc:
    returncode = None

    def poll(self):
        return None


def _tracker(pipe: _Pipe) -> ChildTracker:
    import threading

    tracker = ChildTracker.__new__(ChildTracker)
    tracker.conn, tracker.proc, tracker._lock = pipe, _Proc(), threading.Lock()
    tracker._open, tracker._awaiting = False, []
    return tracker


def test_a_reply_left_unread_by_an_interrupt_is_dropped_and_the_run_state_follows_the_ops():
    pipe = _Pipe()
    tracker = _tracker(pipe)
    pipe.interrupt_next_poll = True
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the child creates the run
        tracker.open("name", None, None, {})
    pipe.replies = [("ok", "run-1"), ("ok", None)]  # open's reply, then end's
    assert tracker.end("KILLED") is None
    assert [op for op, _ in pipe.sent] == ["open", "end"]
    assert tracker._awaiting == []
    assert tracker._open is False  # ended: close() need not wait for the child
    tracker.epoch({"epoch": 0})  # no reply expected
    pipe.replies = [("ok", {"run_id": "run-2", "finished": False, "experiment_id": "1"})]
    assert tracker.lookup(None, False)["run_id"] == "run-2"


def test_an_open_run_keeps_the_child_until_it_is_finished():
    pipe = _Pipe()
    tracker = _tracker(pipe)
    pipe.replies = [("ok", "run-1")]
    assert tracker.open("name", None, None, {}) == "run-1"
    assert tracker._open is True
    pipe.replies = [("ok", None)]
    tracker.finish({}, [], None)
    assert tracker._open is False


def test_errors_cross_the_pipe_as_the_same_error():
    pipe = _Pipe()
    tracker = _tracker(pipe)
    pipe.replies = [("error", _describe(None, ServiceUnavailableError("MLflow at x is unreachable", hint="h")))]
    with pytest.raises(ServiceUnavailableError) as err:
        tracker.lookup(None, False)
    assert (str(err.value), err.value.hint, err.value.exit_code) == ("MLflow at x is unreachable", "h", 69)
    unexpected = _rebuild(_describe(None, KeyError("boom")))
    assert (type(unexpected).__name__, str(unexpected), unexpected.exit_code) == ("ModelsvcError", "KeyError: 'boom'",
                                                                                   70)
