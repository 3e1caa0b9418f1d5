"""Times as the views say them: durations, `in 3h`, `5m ago`, local clock times."""

from __future__ import annotations

from datetime import datetime


def duration(seconds: float) -> str:
    """A short human duration: `45s`, `17m`, `2h 17m`, `3d 5h`, `21d`."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    if days >= 10 or not hours:
        return f"{days}d"
    return f"{days}d {hours}h"


def until(ts: float, now: float, *, coarse: bool = False) -> str:
    """`in 2h 17m`, or `now` when the moment has passed; `coarse` rounds to whole days from two days on."""
    delta = ts - now
    if delta < 1:
        return "now"
    if coarse and delta >= 2 * 86_400:
        return f"in {round(delta / 86_400)}d"
    return "in " + duration(delta)


def ago(ts: float, now: float) -> str:
    delta = now - ts
    return "just now" if delta < 1 else duration(delta) + " ago"


def local_time(ts: float, now: float) -> str:
    """Absolute local time, as short as it can be unambiguous: `14:32`, `Tue 09:00`, `Nov 29 14:32`."""
    moment = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(now).astimezone()
    if moment.date() == today.date():
        return moment.strftime("%H:%M")
    if abs(ts - now) < 7 * 86_400:
        return moment.strftime("%a %H:%M")
    if moment.year == today.year:
        return moment.strftime("%b %d %H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def local_date(ts: float, now: float) -> str:
    """A local date for far-off moments (`Nov 29`); the time too when it is within a day."""
    if abs(ts - now) < 86_400:
        return local_time(ts, now)
    moment = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(now).astimezone()
    return moment.strftime("%b %d" if moment.year == today.year else "%Y-%m-%d")


def stamp(ts: float) -> str:
    """A full local timestamp for logs and history: `2026-11-22 14:32`."""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")


def countdown(expires_at: float | None, now: float) -> str:
    """`in 2d 4h`, `expired` once past, `never` for a credit without an expiry."""
    if expires_at is None:
        return "never"
    if expires_at - now < 1:
        return "expired"
    return "in " + duration(expires_at - now)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def exact_time(ts: float) -> str:
    """The full local time with its zone, to the second: `2026-12-14 20:49:07 UTC`."""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
