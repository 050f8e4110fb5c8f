"""The history checker on hand-made histories: each anomaly by name, and the clean case."""

from __future__ import annotations

from pathlib import Path

from brokerlab.errors import ErrorCode, KafkaError
from lab.checker import ANOMALIES, check
from lab.history import FAIL, INFO, OK, History, outcome_of

T = "t"


def sent(history: History, process: str, value: str, offset: int | None = None, error: KafkaError | None = None,
         partition: int = 0):
    send = history.invoke_send(process, T, partition, value.encode())
    history.complete_send(send, offset, error)
    return send


def poll(history: History, process: str, *rows, partition: int = 0):
    """rows: (offset, value) pairs."""
    return history.record_poll(process, [(T, partition, offset, value.encode()) for offset, value in rows])


def clean_history() -> History:
    h = History()
    for i in range(5):
        sent(h, "p1", f"v{i}", i)
    poll(h, "c1", (0, "v0"), (1, "v1"))
    poll(h, "c1", (2, "v2"), (3, "v3"), (4, "v4"))
    return h


def test_a_clean_history_has_no_anomalies() -> None:
    result = check(clean_history(), contiguous=True)
    assert result.valid and result.counts() == {}
    assert result.stats == {"sends": 5, "acknowledged": 5, "failed": 0, "indeterminate": 0, "polls": 2,
                            "records_read": 5, "values_read": 5}
    assert result.summary().startswith("valid: no anomalies")


def test_lost_write_needs_a_later_offset_read_otherwise_it_is_only_unseen() -> None:
    h = History()
    sent(h, "p1", "a", 0)
    sent(h, "p1", "b", 1)  # acknowledged, then truncated away (acks=1)
    sent(h, "p1", "c", 2)  # acknowledged, never read: late, not provably lost
    sent(h, "p2", "d", 1)  # written after failover at b's offset
    poll(h, "c1", (0, "a"), (1, "d"))
    result = check(h)
    assert [c["value"] for c in result.anomalies["lost-write"]] == ["b"]
    assert sorted(c["value"] for c in result.anomalies["unseen"]) == ["b", "c"]
    assert result.count("inconsistent-offsets") == 0  # only reads count, and offset 1 was read once
    assert not result.valid
    assert check(h, allowed={"lost-write", "unseen"}).valid


def test_inconsistent_offsets_are_one_offset_read_with_two_values() -> None:
    h = History()
    sent(h, "p1", "a", 0)
    poll(h, "c1", (0, "a"))
    poll(h, "c2", (0, "zombie"))
    result = check(h)
    assert result.anomalies["inconsistent-offsets"] == [
        {"topic": T, "partition": 0, "offset": 0, "values": ["a", "zombie"]}
    ]


def test_duplicate_is_one_value_at_two_offsets_counting_acknowledged_offsets() -> None:
    h = History()
    sent(h, "p1", "a", 0)
    sent(h, "p1", "b", 1)
    poll(h, "c1", (0, "a"), (1, "b"), (2, "a"))  # a retried send written twice
    poll(h, "c2", (5, "b"), partition=1)  # acknowledged at t-0:1, read at t-1:5
    result = check(h)
    assert [d["value"] for d in result.anomalies["duplicate"]] == ["a", "b"]


def test_aborted_read_is_a_definitely_failed_send_that_is_read() -> None:
    h = History()
    sent(h, "p1", "ok", 0)
    sent(h, "p1", "refused", None, KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS, "isr too small"))
    sent(h, "p1", "timed-out", None, KafkaError(ErrorCode.REQUEST_TIMED_OUT, "no answer"))
    poll(h, "c1", (0, "ok"), (1, "refused"), (2, "timed-out"))
    result = check(h)
    assert [c["value"] for c in result.anomalies["aborted-read"]] == ["refused"]
    assert result.anomalies["aborted-read"][0]["error"] == "NOT_ENOUGH_REPLICAS"
    assert result.stats["failed"] == 1 and result.stats["indeterminate"] == 1


def test_poll_skip_only_over_offsets_that_exist_and_a_seek_allows_it() -> None:
    h = History()
    for i in range(6):
        sent(h, "p1", f"v{i}", i)
    poll(h, "c1", (0, "v0"), (1, "v1"))
    poll(h, "c1", (4, "v4"))  # skipped 2 and 3, which were acknowledged
    h.record_seek("c1", T, 0, 1)
    poll(h, "c1", (1, "v1"))  # after a seek: neither a skip nor a rewind
    poll(h, "c2", (0, "v0"), (2, "v2"))  # skipped 1
    result = check(h)
    assert result.anomalies["poll-skip"] == [
        {"process": "c1", "topic": T, "partition": 0, "from": 1, "to": 4, "skipped": ["2-3"]},
        {"process": "c2", "topic": T, "partition": 0, "from": 0, "to": 2, "skipped": ["1"]},
    ]
    assert result.count("nonmonotonic-poll") == 0


def test_a_jump_over_offsets_nobody_knows_is_not_a_skip() -> None:
    h = History()
    poll(h, "c1", (0, "a"), (7, "b"))  # 1..6 were never acknowledged nor read (e.g. aborted)
    assert check(h).count("poll-skip") == 0
    assert check(h, contiguous=True).anomalies["offset-gap"] == [{"topic": T, "partition": 0, "offsets": ["1-6"]}]


def test_nonmonotonic_poll_is_a_rewind_without_a_seek() -> None:
    h = History()
    poll(h, "c1", (0, "a"), (1, "b"))
    poll(h, "c1", (1, "b"), (2, "c"))
    result = check(h)
    assert result.anomalies["nonmonotonic-poll"] == [
        {"process": "c1", "topic": T, "partition": 0, "previous": 1, "offset": 1}
    ]


def test_nonmonotonic_send_is_per_producer_and_partition_in_send_order() -> None:
    h = History()
    first = h.invoke_send("p1", T, 0, b"a")
    second = h.invoke_send("p1", T, 0, b"b")
    h.invoke_send("p2", T, 0, b"c")
    h.complete_send(second, 3)  # acknowledged first, lower offset... fine on its own
    h.complete_send(first, 5)  # the earlier send landed later: reordered by a retry
    h.complete_send(h.sends[2], 1)  # another producer: not compared with p1
    result = check(h)
    assert result.anomalies["nonmonotonic-send"] == [{
        "process": "p1", "topic": T, "partition": 0,
        "previous": {"value": "a", "offset": 5}, "next": {"value": "b", "offset": 3}}]


def test_outcomes_and_pending_sends() -> None:
    assert outcome_of(None) == OK
    assert outcome_of(KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS)) == FAIL
    assert outcome_of(KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)) == INFO  # appended, maybe kept
    assert outcome_of(KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER)) == INFO
    assert outcome_of(TimeoutError()) == INFO
    h = History()
    pending = h.invoke_send("p1", T, 0, b"x")
    acks0 = sent(h, "p1", "y", -1)  # acks=0: no offset, unknown
    assert pending.outcome == INFO and not pending.completed
    assert acks0.outcome == INFO and acks0.offset is None
    assert check(h).stats["indeterminate"] == 2


def test_every_named_anomaly_is_reported_and_explained() -> None:
    h = History()
    sent(h, "p1", "a", 0)
    sent(h, "p1", "lost", 1)
    sent(h, "p1", "late", 9)
    sent(h, "p1", "refused", None, KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS))
    sent(h, "p1", "back", 0)  # nonmonotonic-send (and a duplicate offset claim)
    poll(h, "c1", (0, "a"), (2, "refused"), (2, "x"), (4, "a"))
    result = check(h, contiguous=True)
    assert set(result.counts()) == set(ANOMALIES)
    text = result.explain()
    for name in ANOMALIES:
        assert f"  {name}: " in text
    assert result.to_json()["counts"] == result.counts()


def test_a_history_survives_save_and_load(tmp_path: Path) -> None:
    h = clean_history()
    sent(h, "p1", "refused", None, KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS))
    h.record_seek("c1", T, 0, 3)
    path = tmp_path / "history.jsonl"
    h.save(path)
    loaded = History.load(path)
    assert [(s.value, s.outcome, s.offset, s.error) for s in loaded.sends] == [
        (s.value, s.outcome, s.offset, s.error) for s in h.sends
    ]
    assert loaded.polls[1].records == h.polls[1].records and loaded.seeks[0].offset == 3
    assert check(loaded).to_json() == check(h).to_json()
    assert loaded.invoke_send("p9", T, 0, b"new").index == max(s.index for s in h.sends + h.polls + h.seeks) + 1


def test_track_settles_a_send_from_its_handle_callback() -> None:
    class Handle:
        topic, partition = T, 2

        def __init__(self, offset=None, error=None):
            self._offset, self._error, self.callbacks = offset, error, []

        def add_done_callback(self, callback):
            self.callbacks.append(callback)

        def exception(self):
            return self._error

        def result(self):
            return type("Meta", (), {"offset": self._offset})()

    h = History()
    ok, refused = Handle(offset=7), Handle(error=KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS))
    a, b = h.track("p1", ok, b"a"), h.track("p1", refused, b"b")
    assert a.outcome == INFO and a.partition == 2
    for handle in (ok, refused):
        handle.callbacks[0](handle)
    assert (a.outcome, a.offset) == (OK, 7) and (b.outcome, b.error) == (FAIL, "NOT_ENOUGH_REPLICAS")


def test_failures_and_the_longest_gap_without_acknowledgements_in_a_window() -> None:
    h = History()
    for invoked, completed, outcome in [(0, 5, OK), (10, 15, OK), (20, 400, INFO), (30, 410, OK), (500, 505, OK)]:
        s = h.invoke_send("p1", T, 0, b"v%d" % invoked)
        s.invoked_ms, s.completed_ms, s.outcome = invoked, completed, outcome
    assert [s.invoked_ms for s in h.failed_between(0, 100)] == [20]
    assert h.failed_between(100, 600) == []
    assert h.longest_ack_gap_ms(0, 600) == 395  # 15 -> 410
    assert h.longest_ack_gap_ms(420, 600) == 95  # the window's own edges count (505 -> 600)
    assert h.longest_ack_gap_ms(0, 600, partition=(T, 1)) == 600  # nothing acknowledged there


# ---- promises and verdicts -------------------------------------------------------------------

def _lossy_history() -> History:
    """acks=1 style: an acknowledged write at offset 1 was replaced by another value at offset 1."""
    history = History()
    a = history.invoke_send("p", "t", 0, b"a")
    history.complete_send(a, 0)
    b = history.invoke_send("p", "t", 0, b"b")
    history.complete_send(b, 1)
    c = history.invoke_send("p", "t", 0, b"c")
    history.complete_send(c, 1)
    history.record_poll("c", [("t", 0, 0, b"a"), ("t", 0, 1, b"c")])
    return history


def test_a_durable_configuration_promises_no_loss_and_the_verdict_fails_on_one() -> None:
    from lab.checker import Promise, judge

    result = check(_lossy_history())
    assert result.count("lost-write") == 1
    verdict = judge(result, Promise(acks="all", min_insync_replicas=2, idempotence=True))
    assert not verdict.ok and verdict.broken["lost-write"] == 1 and "nonmonotonic-send" in verdict.broken
    assert verdict.lines()[0].startswith("FAIL")


def test_acks_1_tolerates_loss_and_says_why() -> None:
    from lab.checker import Promise, judge

    verdict = judge(check(_lossy_history()), Promise(acks="1", min_insync_replicas=2))
    assert verdict.ok and verdict.tolerated == {"lost-write": 1, "unseen": 1, "nonmonotonic-send": 1}
    assert "acks=1 does not promise durability" in verdict.reasons["lost-write"]
    text = "\n".join(verdict.lines())
    assert "NOT promised: durability" in text and "lost-write=1" in text


def test_without_idempotence_duplicates_are_tolerated_but_aborted_reads_never_are() -> None:
    from lab.checker import Promise, judge

    history = History()
    a = history.invoke_send("p", "t", 0, b"a")
    history.complete_send(a, 0)
    f = history.invoke_send("p", "t", 0, b"f")
    history.complete_send(f, error=KafkaError(ErrorCode.NOT_ENOUGH_REPLICAS, "isr"))
    history.record_poll("c", [("t", 0, 0, b"a"), ("t", 0, 1, b"a"), ("t", 0, 2, b"f")])
    result = check(history)
    plain = judge(result, Promise(idempotence=False))
    assert "duplicate" in plain.tolerated and plain.broken == {"aborted-read": 1}
    strict = judge(result, Promise(idempotence=True))
    assert set(strict.broken) == {"duplicate", "aborted-read"}
    clean = History()
    s = clean.invoke_send("p", "t", 0, b"x")
    clean.complete_send(s, 0)
    clean.record_poll("c", [("t", 0, 0, b"x")])
    assert judge(check(clean), Promise(idempotence=True)).ok


def test_events_and_keys_survive_save_and_load(tmp_path: Path) -> None:
    history = History()
    send = history.invoke_send("p", "t", 0, b"v", key=b"k1")
    history.complete_send(send, 0)
    history.record_event("fault", "kill", node="broker-2", signal="SIGKILL")
    history.record_event("cluster", "BecameLeader", node="broker-1", at_ms=12.5, topic="t", partition="0")
    history.meta["scenario"] = "leader-kill"
    history.save(tmp_path / "h.jsonl")
    loaded = History.load(tmp_path / "h.jsonl")
    assert loaded.sends[0].key == b"k1"
    assert [(e.kind, e.name, e.node) for e in loaded.events] == [
        ("fault", "kill", "broker-2"), ("cluster", "BecameLeader", "broker-1")]  # in time order
    assert loaded.events[0].fields == {"signal": "SIGKILL"}
    assert loaded.meta == {"scenario": "leader-kill"}
    assert abs(loaded.started_epoch_ms - history.started_epoch_ms) < 1e-3
