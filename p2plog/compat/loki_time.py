"""Loki's time and duration parameters (``start``, ``end``, ``time``, ``since``, ``step``), as
Loki's ``parseTimestamp`` and Prometheus' durations read them. Pure.

Times: nanoseconds or seconds since the epoch (an integer of at most 10 digits is seconds, as
in Loki), fractional seconds, or RFC 3339 with nanoseconds. Durations: ``1h30m``, ``500ms``,
``7d`` (units y, w, d, h, m, s, ms, each once, in that order) or plain seconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal, localcontext

from p2plog.compat.logql import LogQLError, short

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_MAX_PARAM_CHARS = 100
_INT = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_S = 10**9
_UNITS = {"y": 365 * 86400 * _S, "w": 7 * 86400 * _S, "d": 86400 * _S, "h": 3600 * _S}
_UNITS |= {"m": 60 * _S, "s": _S, "ms": _S // 1000}  # Prometheus' units, in this order
_DURATION = re.compile("".join(f"(?:([0-9]+){unit})?" for unit in _UNITS))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _decimal_ns(text: str) -> int:
    """A decimal number of seconds as exact ns, floored; far out of range clamps to +-10**21."""
    seconds = Decimal(text)
    if seconds.copy_abs() > 10**12:
        return 10**21 if seconds > 0 else -(10**21)
    with localcontext() as ctx:
        ctx.prec = len(text) + 30
        return int(seconds.scaleb(9).to_integral_value(ROUND_FLOOR))


def _rfc3339_ns(m: re.Match[str]) -> int | None:
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction, sign, off_h, off_m = m.group(7, 8, 9, 10)
    offset = timedelta(0)
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    try:
        t = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        return None
    ns = int((fraction or "")[:9].ljust(9, "0"))  # digits past the ns are dropped, as Go does
    return (t - _EPOCH) // timedelta(seconds=1) * 10**9 + ns


def _time_ns(value: str) -> int | None:
    if "." in value and _NUMBER.fullmatch(value):
        return _decimal_ns(value)
    if _INT.fullmatch(value):
        return int(value) * 10**9 if len(value) <= 10 else int(value)
    m = _RFC3339.fullmatch(value)
    return None if m is None else _rfc3339_ns(m)


def parse_time(value: str | None, default_ns: int) -> int:
    """Loki's time parameter (``parseTimestamp``) as ns since the epoch; ``default_ns`` if absent.

    ``1764817200.5`` (has a "."): seconds; ``1764817200``: at most 10 digits are seconds, more
    are ns; else RFC3339 with an optional fraction (to the ns) and a Z or +hh:mm offset."""
    if not value:
        return default_ns
    ns = _time_ns(value) if len(value) <= _MAX_PARAM_CHARS else None
    if ns is None:
        raise LogQLError(
            f"time {short(value)} is not a time (expected ns or s since the epoch, or RFC3339)"
        )
    if not _I64_MIN <= ns <= _I64_MAX:
        raise LogQLError(f"time {short(value)} is out of range (years 1677 to 2262)")
    return ns


def parse_duration(value: str) -> int:
    """A Prometheus/Loki duration (``500ms``, ``1h30m``, ``7d``: units y w d h m s ms, each at
    most once and in that order) or a number of seconds (``1.5``) as ns."""
    ns: int | None = None
    if 0 < len(value) <= _MAX_PARAM_CHARS:
        if _NUMBER.fullmatch(value):
            ns = _decimal_ns(value)
        elif m := _DURATION.fullmatch(value):
            ns = sum(
                int(n) * unit for n, unit in zip(m.groups(), _UNITS.values(), strict=True) if n
            )
    if ns is None:
        raise LogQLError(
            f"duration {short(value)} is not a duration "
            "(expected e.g. 500ms, 30s, 1h30m, 7d, or seconds such as 1.5)"
        )
    if ns < 0:
        raise LogQLError(f"duration {short(value)} is negative")
    if ns > _I64_MAX:
        raise LogQLError(f"duration {short(value)} is too long (the limit is 292 years)")
    return ns
