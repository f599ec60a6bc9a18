"""The audit trail: one JSON line on stdout per admission decision.

stdout carries audit records only (logs go to stderr), so a log shipper can treat every stdout line of
the webhook as one machine-readable record. The record itself is built by the decision core
(``Outcome.audit``); it never holds env var values or secrets. This module only adds the time and writes.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

import orjson

FIELD_TIME: Final = "time"


def rfc3339_utc(moment: dt.datetime) -> str:
    """``2024-05-01T12:00:00.123Z``: RFC 3339, UTC, millisecond precision."""
    if moment.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Timestamps:
    """Epoch seconds as ``rfc3339_utc`` writes them, the date and time formatted once per second.

    Every decision is stamped; building a timezone-aware datetime and formatting it took about as long as
    encoding the whole audit record.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, epoch_seconds: float) -> str:
        # As datetime.fromtimestamp: rounded to the microsecond, then the milliseconds truncated.
        second, micros = divmod(round(epoch_seconds * 1_000_000), 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micros // 1000:03d}Z"


def _line(record: Mapping[str, Any], stamp: str) -> str:
    stamped = {**record, FIELD_TIME: stamp}
    line = orjson.dumps(stamped, option=orjson.OPT_SORT_KEYS).decode("utf-8")
    if line.isascii():
        return line
    return json.dumps(stamped, separators=(",", ":"), sort_keys=True)


def audit_line(record: Mapping[str, Any], moment: dt.datetime) -> str:
    """The record with its time, as one compact JSON line (keys sorted, so lines are comparable).

    ASCII only (non-ASCII as ``\\uXXXX``), so that the line survives any stdout encoding. orjson writes
    it (several times faster than ``json``) when the record is ASCII, which names from the API server
    almost always are; otherwise ``json`` escapes it, to the same text.
    """
    return _line(record, rfc3339_utc(moment))


class AuditWriter:
    """Writes audit lines to a text stream, flushing each, so no record waits in a buffer at a crash.

    ``clock`` gives the time as epoch seconds (``time.time``).
    """

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.time) -> None:
        self._stream = stream
        self._clock = clock
        self._stamps = Timestamps()
        # One line per write even if a thread (e.g. a future executor) writes at the same time.
        self._lock = threading.Lock()

    def write(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            line = _line(record, self._stamps.format(self._clock()))
            self._stream.write(line + "\n")
            self._stream.flush()
