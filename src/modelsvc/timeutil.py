"""Parsing and validating the dates and timestamps that come from the command line or config."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from modelsvc.errors import UsageError


def parse_date(value: str | date, *, option: str = "date") -> date:
    """``YYYY-MM-DD`` → date; anything else is a UsageError naming the option."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value.strip())
    except (ValueError, AttributeError):
        raise UsageError(f"{option}: '{value}' is not a date (expected YYYY-MM-DD)") from None


def parse_timestamp(value: str | datetime, *, option: str = "timestamp") -> datetime:
    """An ISO date or timestamp → aware UTC datetime (naive input is taken as UTC)."""
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except (ValueError, AttributeError):
            raise UsageError(
                f"{option}: '{value}' is not a timestamp (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"
            ) from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


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
