"""The bulk Redis writer's reply reader (``modelsvc.features.online._Replies``), fed by a fake socket in pieces of
every size: what redis-py would have parsed, for the replies of ``HGET``, ``HSET`` and ``EXPIRE``."""

from __future__ import annotations

import random

import pytest

from modelsvc.features.online import _Replies


class _Sock:
    """Hands out ``data`` in pieces of the given sizes (cycled), then reports the connection closed."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.calls = data, sizes, 0

    def recv(self, _n: int) -> bytes:
        size = self.sizes[self.calls % len(self.sizes)]
        self.calls += 1
        piece, self.data = self.data[:size], self.data[size:]
        return piece


class _Conn:
    def __init__(self, sock: _Sock) -> None:
        self._sock = sock


def _bulk(value: bytes | None, resp3: bool) -> bytes:
    if value is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    return b"$%d\r\n%b\r\n" % (len(value), value)


@pytest.mark.parametrize("resp3", [False, True])
@pytest.mark.parametrize("sizes", [[1], [2, 7], [3, 1, 50], [1 << 20]])
def test_values_are_read_whatever_the_pieces(resp3, sizes):
    rng = random.Random(7)
    # values with the protocol's own bytes inside: \r\n, $, _, - and nulls in runs and alone
    pool = [None, b"", b"\r\n", b"$-1\r\n", b"_\r\n", b"-ERR not an error", bytes(range(256))]
    want = [None] * 30 + [rng.choice(pool) for _ in range(200)] + [None] * 40 + [b"\x08\x01"]
    data = b"".join(_bulk(v, resp3) for v in want)
    replies = _Replies(_Conn(_Sock(data, sizes)))
    got = replies.values(100) + replies.values(len(want) - 100)
    assert got == want


def test_a_run_of_nulls_is_taken_at_once_and_stops_at_the_count():
    data = b"$-1\r\n" * 5 + b"$2\r\nab\r\n"
    replies = _Replies(_Conn(_Sock(data, [1 << 20])))
    assert replies.values(3) == [None] * 3
    assert replies.values(3) == [None, None, b"ab"]


def test_an_error_reply_is_raised_as_redis_py_raises_it():
    from redis.exceptions import ConnectionError, InvalidResponse, ResponseError

    data = b"$-1\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    with pytest.raises(ResponseError) as err:
        _Replies(_Conn(_Sock(data, [4]))).values(2)
    assert str(err.value) == "WRONGTYPE Operation against a key holding the wrong kind of value"
    with pytest.raises(InvalidResponse, match="unexpected reply"):
        _Replies(_Conn(_Sock(b"*1\r\n:1\r\n", [64]))).values(1)
    with pytest.raises(ConnectionError, match="closed"):
        _Replies(_Conn(_Sock(b"$-1\r\n", [64]))).values(2)


@pytest.mark.parametrize("sizes", [[1], [3, 5], [1 << 20]])
def test_integer_replies_are_counted_and_an_error_among_them_is_raised(sizes):
    from redis.exceptions import ResponseError

    replies = _Replies(_Conn(_Sock(b":1\r\n" * 7 + b":12\r\n" * 3, sizes)))
    replies.sent(10)
    replies.wait(in_flight=6)
    replies.wait()
    failing = _Replies(_Conn(_Sock(b":1\r\n" * 3 + b"-WRONGTYPE Operation\r\n" + b":1\r\n", sizes)))
    failing.sent(5)
    with pytest.raises(ResponseError) as err:  # the error's '-' at the start of a piece, or inside one
        failing.wait()
    assert str(err.value) == "WRONGTYPE Operation"  # the whole line, however it was cut
