"""Hypothesis properties of the storage engine.

1. Crash recovery: after random appends (with ticks that flush and checkpoint) and one fault at a
   Hypothesis-chosen point (power loss, bit flip, torn tail, garbage, a plain kill, a clean
   stop), the reopened log holds exactly the longest valid prefix of what was written.
2. Reads: for random fetch offsets, max_bytes and max_offset, a read returns exactly the
   batches Kafka's rules say (from the one holding the offset, whole, at least one, within
   max_bytes, below max_offset), with the records that were appended.
"""

from __future__ import annotations

import bisect

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from log_testkit import TP, TP_DIR, all_records

from brokerlab.disk import MemoryDisk
from brokerlab.record_batch import LEADER_EPOCH_OFFSET, decode_records, encode_batch, iter_headers
from node.log import LogConfig, LogManager
from node.log.checkpoints import RECOVERY_POINT_CHECKPOINT, parse_offsets
from node.log.segment import segment_file_name

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_strategy = st.tuples(st.text(alphabet="abh", max_size=3), st.one_of(st.none(), st.binary(max_size=5)))
record_strategy = st.tuples(
    st.one_of(st.none(), st.binary(max_size=16)),
    st.one_of(st.none(), st.binary(min_size=20, max_size=120)),
    st.lists(header_strategy, max_size=2).map(tuple),
)
# (records, tick after the append?, bump the leader epoch?)
append_strategy = st.tuples(st.lists(record_strategy, min_size=1, max_size=4), st.booleans(), st.booleans())
FAULTS = ["kill", "clean", "power_loss", "bit_flip", "torn_tail", "garbage"]


class Written:
    """What the test appended: per batch its offsets, epoch, size and records."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int, int, list[tuple]]] = []  # base, last, epoch, size, records

    def add(self, base: int, epoch: int, payload: bytes, records: list[tuple]) -> None:
        self.batches.append((base, base + len(records) - 1, epoch, len(payload), records))

    def records(self, batch_count: int | None = None) -> list[tuple]:
        return [r for b in self.batches[:batch_count] for r in b[4]]

    def epochs(self, batch_count: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for base, _, epoch, _, _ in self.batches[:batch_count]:
            if not out or out[-1][0] != epoch:
                out.append((epoch, base))
        return out

    def layout(self, segment_bases: list[int]) -> list[tuple[int, int]]:
        """(segment base, position in its file) of every batch, from the sizes alone."""
        out, position, current = [], 0, None
        for base, _, _, size, _ in self.batches:
            segment = segment_bases[bisect.bisect_right(segment_bases, base) - 1]
            if segment != current:
                current, position = segment, 0
            out.append((segment, position))
            position += size
        return out


def _config(data) -> LogConfig:
    return LogConfig(
        segment_bytes=data.draw(st.integers(900, 2500), label="segment_bytes"),
        index_interval_bytes=data.draw(st.integers(0, 1500), label="index_interval_bytes"),
        flush_policy=data.draw(st.sampled_from(["none", "batch", "interval"]), label="flush_policy"),
        flush_interval_ms=data.draw(st.integers(1, 40), label="flush_interval_ms"),
        checkpoint_interval_ms=data.draw(st.integers(1, 60), label="checkpoint_interval_ms"),
        retention_ms=-1,
    )


def _append_all(data, manager: LogManager, written: Written) -> int:
    log = manager.get_or_create(TP, 0)
    now = epoch = 0
    for values, tick, bump in data.draw(st.lists(append_strategy, min_size=2, max_size=40), label="appends"):
        now += 7
        epoch += bump
        payload = encode_batch([(now + i, key, value, headers) for i, (key, value, headers) in enumerate(values)])
        info = log.append_as_leader(payload, epoch, now)
        written.add(info.base_offset, epoch, payload,
                    [(info.base_offset + i, now + i, k, v, h) for i, (k, v, h) in enumerate(values)])
        if tick:
            manager.tick(now)
    return now


def _checkpointed_recovery_point(disk: MemoryDisk) -> int:
    if not disk.exists(RECOVERY_POINT_CHECKPOINT):
        return 0
    return parse_offsets(disk.read_file(RECOVERY_POINT_CHECKPOINT)).get(TP, 0)


def _segment_path(base: int) -> str:
    return f"{TP_DIR}/{segment_file_name(base)}"


def _inject(data, fault: str, disk: MemoryDisk, manager: LogManager, written: Written) -> int:
    """Apply the fault; returns how many of the written batches must survive."""
    log = manager.get(TP)
    everything = len(written.batches)
    if fault == "clean":
        manager.close()
        return everything
    if fault == "kill":
        return everything
    if fault == "power_loss":
        recovery_point = log.recovery_point
        disk.crash()
        return sum(1 for b in written.batches if b[1] < recovery_point)
    bases = [s.base_offset for s in log.segments]
    sizes = {s.base_offset: s.size for s in log.segments}
    layout = written.layout(bases)
    if fault == "bit_flip":
        # Only segments from the checkpointed recovery point on are scanned; older ones were
        # fsynced and are trusted (as in Kafka), so a flip there is not this property's business.
        first_scanned = bases[max(bisect.bisect_right(bases, _checkpointed_recovery_point(disk)) - 1, 0)]
        candidates = [b for b in bases if b >= first_scanned and sizes[b] > 0]
        if not candidates:
            return everything
        segment = data.draw(st.sampled_from(candidates), label="flip segment")
        position = data.draw(st.integers(0, sizes[segment] - 1), label="flip position")
        bit = data.draw(st.integers(0, 7), label="flip bit")
        old = disk.file_bytes(_segment_path(segment))[position]
        disk.corrupt(_segment_path(segment), position, bytes([old ^ (1 << bit)]))
        hit = max(i for i, (s, p) in enumerate(layout) if s == segment and p <= position)
        within = position - layout[hit][1]
        if LEADER_EPOCH_OFFSET <= within < LEADER_EPOCH_OFFSET + 4:
            return -1  # the epoch field is outside the CRC (as in Kafka): records all survive
        return hit
    candidates = [b for b in bases if sizes[b] > 0]
    segment = data.draw(st.sampled_from(candidates), label="fault segment")
    in_segment = [i for i, (s, _) in enumerate(layout) if s == segment]
    if fault == "torn_tail":
        cut = data.draw(st.integers(0, sizes[segment] - 1), label="cut at")
        disk.open(_segment_path(segment)).truncate(cut)
        return sum(1 for i, (s, p) in enumerate(layout) if s < segment or
                   (s == segment and p + written.batches[i][3] <= cut))
    assert fault == "garbage"
    garbage = data.draw(st.binary(min_size=1, max_size=100), label="garbage")
    disk.open(_segment_path(segment)).append(garbage)
    return in_segment[-1] + 1  # later segments go with everything after the first bad byte


@SETTINGS
@given(data=st.data(), fault=st.sampled_from(FAULTS))
def test_recovered_log_is_the_longest_valid_prefix(data, fault):
    config = _config(data)
    disk = MemoryDisk()
    manager = LogManager(disk, config, 0)
    written = Written()
    now = _append_all(data, manager, written)
    segment_count = manager.get(TP).segment_count
    survivors = _inject(data, fault, disk, manager, written)
    epoch_field_hit = survivors == -1
    if epoch_field_hit:
        survivors = len(written.batches)

    reopened = LogManager(disk, config, now + 1)
    log = reopened.get(TP)
    expected = written.records(survivors)
    event(f"{fault}: {'lost batches' if survivors < len(written.batches) else 'kept all'}")
    event(f"segments before the fault: {'several' if segment_count > 1 else 'one'}")
    assert all_records(log) == expected
    assert log.log_end_offset == len(expected)
    assert [e.name for e in reopened.recovery_events] == ([] if fault == "clean" else ["LogRecovered"])
    if not epoch_field_hit:
        assert log.leader_epoch_cache.entries == written.epochs(survivors)

    # The recovered log is a normal log: it appends, and recovering it again changes nothing.
    # (A flipped epoch field is not detected, as in Kafka, and may have raised the latest epoch.)
    epoch = max(1_000, log.leader_epoch_cache.latest_epoch)
    info = log.append_as_leader(encode_batch([(now + 2, b"k", b"after", ())]), epoch, now + 2)
    assert info.base_offset == len(expected)
    expected = expected + [(info.base_offset, now + 2, b"k", b"after", ())]
    again = LogManager(disk, config, now + 3).get(TP)  # unclean (no close) once more
    assert all_records(again) == expected


def _read_oracle(batches: list[tuple[int, int, int]], fetch_offset: int, max_bytes: int, limit: int):
    """The (base offset, size) of the batches a read must return."""
    out: list[tuple[int, int]] = []
    total = 0
    for base, last, size in batches:
        if last < fetch_offset:
            continue
        if last >= limit or (out and total + size > max_bytes):
            break
        out.append((base, size))
        total += size
    return out


@SETTINGS
@given(data=st.data())
def test_reads_return_exactly_the_appended_batches(data):
    config = LogConfig(
        segment_bytes=data.draw(st.integers(1500, 5000), label="segment_bytes"),
        index_interval_bytes=data.draw(st.integers(0, 2000), label="index_interval_bytes"),
    )
    disk = MemoryDisk()
    manager = LogManager(disk, config, 0)
    log = manager.get_or_create(TP, 0)
    sizes = data.draw(st.lists(st.lists(st.integers(0, 200), min_size=1, max_size=6), min_size=1, max_size=40),
                      label="value sizes")
    batches, records = [], {}
    for i, value_sizes in enumerate(sizes):
        payload = encode_batch([(i * 10 + j, None, bytes([j]) * n, ()) for j, n in enumerate(value_sizes)])
        info = log.append_as_leader(payload, 0, i)
        batches.append((info.base_offset, info.last_offset, len(payload)))
        for j, n in enumerate(value_sizes):
            records[info.base_offset + j] = (info.base_offset + j, i * 10 + j, None, bytes([j]) * n, ())
    reopen = data.draw(st.sampled_from(["no", "clean", "unclean"]), label="reopen")
    if reopen != "no":
        if reopen == "clean":
            manager.close()
        log = LogManager(disk, config, 1).get(TP)
    end = log.log_end_offset
    queries = st.tuples(st.integers(0, end), st.integers(1, 6000), st.one_of(st.none(), st.integers(0, end)))
    for fetch_offset, max_bytes, max_offset in data.draw(st.lists(queries, min_size=1, max_size=20), label="reads"):
        result = log.read(fetch_offset, max_bytes, max_offset)
        limit = end if max_offset is None else max_offset
        expected = _read_oracle(batches, fetch_offset, max_bytes, limit)
        assert [(h.base_offset, h.size_bytes) for _, h in iter_headers(result)] == expected
        assert len(result) == sum(size for _, size in expected)
        got = [tuple(r) for r in decode_records(result)]
        assert got == [records[o] for base, _ in expected for o in range(base, base + _count(batches, base))]


def _count(batches, base: int) -> int:
    for b, last, _ in batches:
        if b == base:
            return last - b + 1
    raise AssertionError(base)
