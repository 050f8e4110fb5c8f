"""Replay: a shard rebuilt from its records equals the original.

- all records (transient + durable), in order -> the same groups, field for field;
- the durable records only, encoded to __consumer_offsets batches and decoded back (what a new
  coordinator loads) -> the same Stable/Empty groups and committed offsets.
"""

from __future__ import annotations

from group_harness import ShardHarness, assignment
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerlab.ids import TopicPartition
from node.group.config import GroupConfig
from node.group.coordinator import GroupShard, member_ids
from node.group.records import (
    decode_log_bytes,
    encode_batch_of,
    is_durable,
    java_string_hash,
    partition_for,
)
from node.group.state import GroupState


def rebuilt(records) -> GroupShard:
    shard = GroupShard(0, GroupConfig(), member_ids("replay"))
    for record in records:
        shard.replay(record)
    return shard


def loaded(records) -> GroupShard:
    data = b"".join(encode_batch_of([r], 1)[0] for r in records if is_durable(r))
    decoded, _ = decode_log_bytes(_with_offsets(data))
    return rebuilt(decoded)


def _with_offsets(data: bytes) -> bytes:
    """Batches as the log would hold them (base offsets assigned in order)."""
    from brokerlab.record_batch import iter_headers, set_base_offset

    out = bytearray(data)
    offset = 0
    for position, header in iter_headers(bytes(out)):
        set_base_offset(out, position, offset)
        offset += header.record_count
    return bytes(out)


def durable_view(shard: GroupShard) -> dict:
    view = {}
    for group_id, group in shard.groups.items():
        view[group_id] = (
            group.state if group.state in (GroupState.STABLE, GroupState.EMPTY) else None,
            group.generation_id, group.protocol_type, group.protocol_name, group.leader_id,
            {m.member_id: (m.group_instance_id, m.protocols, m.assignment) for m in group.members.values()},
            dict(group.offsets), list(group.rebalances), dict(group.owners),
        )
    return view


def test_java_hash_matches_java():
    # Known Java "...".hashCode() values ("polygenelubricants" is the famous Integer.MIN_VALUE).
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("polygenelubricants") == -2_147_483_648  # Integer.MIN_VALUE
    assert partition_for("polygenelubricants", 8) == 0  # Utils.abs(MIN_VALUE) == 0
    assert java_string_hash("hello") == 99_162_322
    assert java_string_hash("😀") == 31 * 0xD83D + 0xDE00  # a surrogate pair: two UTF-16 code units
    assert all(0 <= partition_for(f"g{i}", 8) < 8 for i in range(100))


def scenario(h: ShardHarness) -> None:
    tp = TopicPartition
    assignments = h.form_group(3, session_ms=3000)
    a, b, c = list(assignments)
    h.commit(a, 1, {tp("t", 0): 10, tp("t", 3): 4})
    h.leave(b, reason="consumer closed")
    ja, jc = h.join(member_id=a)[0], h.join(member_id=c)[0]
    joins = [h.answer(ja), h.answer(jc)]
    h.complete_sync(joins)
    h.commit(c, 2, {tp("t", 1): 7})
    h.join(instance="s1", group="static")
    h.run_until_idle(100)
    h.commit("", -1, {tp("u", 0): 1}, group="simple")


def test_full_replay_equals_original():
    h = ShardHarness()
    scenario(h)
    assert rebuilt(h.records).groups == h.shard.groups


def test_loading_durable_records_equals_original_stable_and_empty_groups():
    h = ShardHarness()
    scenario(h)
    view = durable_view(loaded(h.records))
    original = durable_view(h.shard)
    for group_id, group in h.shard.groups.items():
        if group.state in (GroupState.STABLE, GroupState.EMPTY):
            assert view[group_id] == original[group_id], group_id
    assert view["g"][0] is GroupState.STABLE and view["g"][1] == 2
    assert view["simple"][0] is GroupState.EMPTY


OPS = st.lists(st.tuples(st.sampled_from(["join", "rejoin", "sync", "heartbeat", "leave", "commit", "time"]),
                         st.integers(0, 5), st.integers(0, 4000)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_random_histories_replay_to_the_same_state(ops):
    h = ShardHarness(initial_rebalance_delay_ms=50)
    known: list[str] = []
    for op, index, amount in ops:
        group = h.shard.groups.get("g")
        member = known[index % len(known)] if known else ""
        generation = group.generation_id if group is not None else 0
        if op == "join":
            _, first = h.join(session_ms=2000, rebalance_ms=3000)
            if first is not None and first.member_id:
                known.append(first.member_id)
                h.join(member_id=first.member_id, session_ms=2000, rebalance_ms=3000)
        elif op == "rejoin" and member:
            h.join(member_id=member, session_ms=2000, rebalance_ms=3000, reason="member-rejoined: test")
        elif op == "sync" and member and group is not None:
            leader = group.leader_id == member
            plan = {m: assignment(TopicPartition("t", i)) for i, m in enumerate(group.members)} if leader else None
            h.sync(member, generation, assignments=plan)
        elif op == "heartbeat" and member:
            h.heartbeat(member, generation)
        elif op == "leave" and member:
            h.leave(member)
        elif op == "commit" and member:
            h.commit(member, generation, {TopicPartition("t", index): amount})
        elif op == "time":
            h.advance(amount)
    assert rebuilt(h.records).groups == h.shard.groups
    view, original = durable_view(loaded(h.records)), durable_view(h.shard)
    for group_id, group in h.shard.groups.items():
        if group.state in (GroupState.STABLE, GroupState.EMPTY):
            assert view[group_id] == original[group_id]
