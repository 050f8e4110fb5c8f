"""brokerlab.logfmt: quoting, value shapes, pure UTC timestamps, EventLog lines."""

from __future__ import annotations

import io
import logging
from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from brokerlab.logfmt import EventLog, LogfmtHandler, format_line, format_value, utc_timestamp
from brokerlab.sansio import TraceEvent


def test_values():
    assert format_value("orders") == "orders"
    assert format_value("") == '""'
    assert format_value("two words") == '"two words"'
    assert format_value('say "hi"\n') == '"say \\"hi\\"\\n"'
    assert format_value("a=b") == '"a=b"'
    assert format_value(True) == "true" and format_value(None) == "null"
    assert format_value([1, 2, 3]) == "[1,2,3]" and format_value({3, 1}) == "[1,3]"
    assert format_value(-1) == "-1"


def test_line():
    assert format_line({"event": "TopicCreated", "topic": "orders", "partitions": 6}) == "event=TopicCreated topic=orders partitions=6"


@given(st.integers(-(2**40), 2**45))
def test_utc_timestamp_matches_datetime(epoch_ms):
    seconds, millis = divmod(epoch_ms, 1000)
    expected = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
    assert utc_timestamp(epoch_ms) == expected


def test_event_log_writes_one_flushed_line_per_event():
    stream = io.StringIO()
    log = EventLog("controller", lambda: 1_764_060_558_123, stream)
    log(TraceEvent("TopicCreated", {"topic": "orders", "partitions": 6}))
    log(TraceEvent("RegistrationFailed", {"reason": "no route"}))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "ts=2025-11-25T08:49:18.123Z level=info node=controller event=TopicCreated topic=orders partitions=6"
    assert lines[1].startswith("ts=2025-11-25T08:49:18.123Z level=warn node=controller event=RegistrationFailed")


def test_logging_records_become_log_events():
    stream = io.StringIO()
    logger = logging.getLogger("test.logfmt")
    handler = LogfmtHandler(EventLog("controller", lambda: 0, stream))
    logger.addHandler(handler)
    try:
        logger.warning("disk %s", "slow")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == 'ts=1970-01-01T00:00:00.000Z level=warn node=controller event=Log logger=test.logfmt msg="disk slow"\n'
