"""A Hypothesis state machine over one partition log: appends, truncations, retention, ticks,
clean restarts, killed processes and power losses in any order, checked against a model (the
records by offset, the log start and end) after every step."""

from __future__ import annotations

import bisect

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from log_testkit import TP, TP_DIR, all_records

from brokerlab.disk import MemoryDisk
from brokerlab.record_batch import encode_batch
from node.log import LogConfig, LogManager, checkpoints
from node.log.segment import LOG_SUFFIX, parse_segment_file_name

record_strategy = st.tuples(
    st.one_of(st.none(), st.binary(max_size=12)),
    st.binary(min_size=20, max_size=150),
)


class PartitionLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.disk = MemoryDisk()
        self.manager = None
        self.now = 0
        self.epoch = 0
        self.records: dict[int, tuple] = {}
        self.batches: list[tuple[int, int, int]] = []  # base, last, epoch
        self.log_start = 0
        self.end = 0

    @property
    def log(self):
        return self.manager.get(TP)

    @initialize(
        segment_bytes=st.integers(850, 1800),
        index_interval_bytes=st.integers(0, 1500),
        flush_policy=st.sampled_from(["none", "batch", "interval"]),
        retention_bytes=st.one_of(st.just(-1), st.integers(300, 3000)),
    )
    def setup(self, segment_bytes, index_interval_bytes, flush_policy, retention_bytes):
        self.config = LogConfig(
            segment_bytes=segment_bytes, index_interval_bytes=index_interval_bytes, flush_policy=flush_policy,
            flush_interval_ms=20, retention_bytes=retention_bytes, retention_ms=-1,
            retention_check_interval_ms=1, checkpoint_interval_ms=50,
        )
        self.manager = LogManager(self.disk, self.config, 0)
        self.manager.get_or_create(TP, 0)

    @rule(
        batches=st.lists(st.lists(record_strategy, min_size=1, max_size=4), min_size=1, max_size=4),
        one_payload=st.booleans(),
        bump=st.booleans(),
    )
    def append(self, batches, one_payload, bump):
        """A few batches, as one produce payload or one append each."""
        self.now += 5
        self.epoch += bump
        payloads = [encode_batch([(self.now + i, k, v, ()) for i, (k, v) in enumerate(values)]) for values in batches]
        if one_payload and sum(map(len, payloads)) <= self.config.segment_bytes:
            info = self.log.append_as_leader(b"".join(payloads), self.epoch, self.now)
            assert (info.base_offset, info.record_count) == (self.end, sum(map(len, batches)))
        else:
            for payload in payloads:
                self.log.append_as_leader(payload, self.epoch, self.now)
        for values in batches:
            for i, (key, value) in enumerate(values):
                self.records[self.end + i] = (self.end + i, self.now + i, key, value, ())
            self.batches.append((self.end, self.end + len(values) - 1, self.epoch))
            self.end += len(values)

    @rule(data=st.data())
    def truncate(self, data):
        offset = data.draw(st.integers(self.log_start, self.end), label="truncate to")
        # The batch holding the offset goes whole.
        new_end = next((base for base, last, _ in self.batches if base <= offset <= last), min(offset, self.end))
        assert self.log.truncate_to(offset) == self.end - new_end
        self._drop_from(new_end)

    def _drop_from(self, offset: int) -> None:
        self.records = {o: r for o, r in self.records.items() if o < offset}
        self.batches = [b for b in self.batches if b[1] < offset]
        self.end = max(offset, self.log_start)

    @rule(elapsed=st.integers(0, 40))
    def tick(self, elapsed):
        self.now += elapsed
        self.log.high_watermark = self.end  # let retention reach every closed segment
        self.manager.tick(self.now)
        new_start = self.log.log_start_offset
        assert new_start >= self.log_start
        assert new_start == self.end or new_start in {b[0] for b in self.batches}
        self.log_start = new_start
        self.records = {o: r for o, r in self.records.items() if o >= new_start}
        self.batches = [b for b in self.batches if b[0] >= new_start]

    @rule(kind=st.sampled_from(["clean", "kill", "power_loss"]))
    def restart(self, kind):
        if kind == "clean":
            self.manager.close()
            self.manager = LogManager(self.disk, self.config, self.now)
            assert self.manager.recovery_events == []
        elif kind == "kill":
            # The page cache survives a killed process: recovery finds everything valid.
            self.manager = LogManager(self.disk, self.config, self.now)
            assert [e.fields["truncated_bytes"] for e in self.manager.recovery_events] == [0]
        else:
            recovery_point = self.log.recovery_point
            assert recovery_point == self.end or recovery_point in {b[0] for b in self.batches}
            self.disk.crash()
            self.manager = LogManager(self.disk, self.config, self.now)
            self._drop_from(recovery_point)

    @precondition(lambda self: self.manager is not None)
    @invariant()
    def log_matches_the_model(self):
        log = self.log
        assert (log.log_start_offset, log.log_end_offset) == (self.log_start, self.end)
        assert all_records(log) == [self.records[o] for o in sorted(self.records)]
        on_disk = {}
        for name in self.disk.listdir(TP_DIR):
            parsed = parse_segment_file_name(name)
            if parsed is not None and parsed[1] == LOG_SUFFIX:
                on_disk[parsed[0]] = len(self.disk.file_bytes(f"{TP_DIR}/{name}"))
        assert on_disk == {s.base_offset: s.size for s in log.segments}
        assert log.size_bytes == sum(on_disk.values())
        assert log.log_start_offset <= log.high_watermark <= log.log_end_offset
        assert log.recovery_point <= log.log_end_offset
        # The checkpointed one too: above the log end (stale after a truncation), the next
        # unclean start would trust segments that later appends filled and never fsynced.
        checkpointed, problem = checkpoints.read_offsets(self.disk, checkpoints.RECOVERY_POINT_CHECKPOINT)
        assert problem is None and checkpointed.get(TP, 0) <= log.log_end_offset

    @precondition(lambda self: self.manager is not None)
    @invariant()
    def epoch_cache_is_consistent(self):
        entries = self.log.leader_epoch_cache.entries
        assert all(a.epoch < b.epoch and a.start_offset < b.start_offset for a, b in zip(entries, entries[1:]))
        assert all(self.log_start <= e.start_offset <= self.end for e in entries)
        starts = [e.start_offset for e in entries]
        for base, _, epoch in self.batches:
            slot = bisect.bisect_right(starts, base) - 1
            assert slot >= 0 and entries[slot].epoch == epoch


PartitionLogMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_partition_log_state_machine = PartitionLogMachine.TestCase
