"""Parsing and validating the dates and timestamps that come from the command line or config."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

from modelsvc.errors import UsageError

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# a date, optionally a time (hours and minutes, seconds, up to microseconds) and a UTC offset or Z
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?")


def parse_date(value: str | date, *, option: str = "date") -> date:
    """``YYYY-MM-DD`` → date; anything else is a UsageError naming the option. Python's ``fromisoformat`` alone
    would also take ``20250105`` and ``2025-W02-1``: other spellings of a day are refused, as are blanks."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option}: {_quote(value)} is not a date (expected YYYY-MM-DD)") from None


def parse_timestamp(value: str | datetime, *, option: str = "timestamp") -> datetime:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` with an optional ``Z``/``±HH:MM`` → aware UTC datetime
    (naive input is taken as UTC)."""
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
                raise ValueError(value)
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"{option}: {_quote(value)} is not a timestamp (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"
            ) from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _quote(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) and value.strip() == value else repr(value)


def yesterday() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def date_range(start: str | date | None, end: str | date | None, *, max_days: int = 3660) -> list[date]:
    """Inclusive list of days; both default to yesterday (UTC). Reversed or huge ranges are UsageErrors."""
    s = parse_date(start, option="--start-date") if start is not None else None
    e = parse_date(end, option="--end-date") if end is not None else None
    if s is None and e is None:
        s = e = yesterday()
    elif s is None:
        s = e
    elif e is None:
        e = s
    assert s is not None and e is not None
    if e < s:
        raise UsageError(f"--end-date {e} is before --start-date {s}")
    n = (e - s).days + 1
    if n > max_days:
        raise UsageError(f"date range {s}..{e} spans {n} days (at most {max_days})")
    return [s + timedelta(days=i) for i in range(n)]


def day_start(d: date) -> datetime:
    """Midnight UTC at the start of ``d``."""
    return datetime.combine(d, time(0), tzinfo=timezone.utc)
