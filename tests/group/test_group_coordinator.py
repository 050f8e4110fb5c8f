"""GroupShard: every state transition and error of Kafka's classic group protocol, driven by now_ms."""

from __future__ import annotations

import pytest
from group_harness import ShardHarness, assignment, partitions_of

from brokerlab.errors import ErrorCode
from brokerlab.ids import TopicPartition
from node.group.state import TRANSITIONS, GroupState, InvalidTransition, check_transition


def codes(response) -> int:
    return response.error_code


# ---------------------------------------------------------------------------- transition table


def test_transition_table_is_kafkas_minus_unload():
    assert TRANSITIONS[GroupState.EMPTY] == {GroupState.PREPARING_REBALANCE, GroupState.DEAD}
    assert TRANSITIONS[GroupState.PREPARING_REBALANCE] == {GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    assert TRANSITIONS[GroupState.COMPLETING_REBALANCE] == {GroupState.STABLE, GroupState.PREPARING_REBALANCE}
    assert TRANSITIONS[GroupState.STABLE] == {GroupState.PREPARING_REBALANCE}
    assert TRANSITIONS[GroupState.DEAD] == set()
    with pytest.raises(InvalidTransition):
        check_transition("g", GroupState.STABLE, GroupState.EMPTY)


# ---------------------------------------------------------------------------- JoinGroup


def test_first_join_gets_member_id_required_then_joins():
    h = ShardHarness(initial_rebalance_delay_ms=0)
    _, first = h.join()
    assert codes(first) == ErrorCode.MEMBER_ID_REQUIRED
    assert first.member_id.startswith("c-")
    assert h.group().pending_members == {first.member_id}
    handle, response = h.join(member_id=first.member_id)
    # One member, no initial delay: the join phase completes at once.
    assert response is None
    answer = h.answer(handle)
    assert codes(answer) == 0 and answer.generation_id == 1 and answer.leader == first.member_id
    assert [m.member_id for m in answer.members] == [first.member_id]
    assert answer.protocol_name == "range"
    assert h.group().state is GroupState.COMPLETING_REBALANCE


def test_join_errors():
    h = ShardHarness()
    assert codes(h.join(group="")[1]) == ErrorCode.INVALID_GROUP_ID
    assert codes(h.join(session_ms=100)[1]) == ErrorCode.INVALID_SESSION_TIMEOUT
    assert codes(h.join(session_ms=10_000_000)[1]) == ErrorCode.INVALID_SESSION_TIMEOUT
    assert codes(h.join(member_id="ghost")[1]) == ErrorCode.UNKNOWN_MEMBER_ID
    assert codes(h.join(protocols=())[1]) == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert codes(h.join(protocol_type="")[1]) == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_inconsistent_protocols_are_refused():
    h = ShardHarness()
    h.form_group(1)
    assert codes(h.join(protocols=("roundrobin",))[1]) == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    assert codes(h.join(protocol_type="connect")[1]) == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_negotiation_picks_first_common_strategy():
    h = ShardHarness()
    a = h.join_dynamic(protocols=("range", "cooperative-sticky"))[0]
    b = h.join_dynamic(protocols=("cooperative-sticky", "roundrobin"))[0]
    h.run_until_idle(100)
    # range is not common; cooperative-sticky is the only protocol both support.
    assert h.answer(a).protocol_name == h.answer(b).protocol_name == "cooperative-sticky"


def test_protocol_vote_majority():
    h = ShardHarness()
    handles = [h.join_dynamic(protocols=("range", "roundrobin"))[0] for _ in range(2)]
    handles.append(h.join_dynamic(protocols=("roundrobin", "range"))[0])
    h.run_until_idle(100)
    assert {h.answer(x).protocol_name for x in handles} == {"range"}


def test_group_max_size():
    h = ShardHarness(max_size=2)
    h.form_group(2)
    assert codes(h.join()[1]) == ErrorCode.GROUP_MAX_SIZE_REACHED


def test_initial_rebalance_delay_waits_and_extends():
    h = ShardHarness(initial_rebalance_delay_ms=300)
    a = h.join_dynamic()[0]
    assert h.group().state is GroupState.PREPARING_REBALANCE
    h.advance(200)
    b = h.join_dynamic()[0]  # extends the delay to 200 + 300
    h.advance(200)
    assert h.answer(a) is None, "still inside the extended delay"
    h.advance(100)
    assert h.answer(a).generation_id == h.answer(b).generation_id == 1
    assert h.group().state is GroupState.COMPLETING_REBALANCE


def test_join_completes_when_all_known_members_rejoined():
    h = ShardHarness()
    assignments = h.form_group(2)
    members = list(assignments)
    assert h.group().state is GroupState.STABLE
    # A third member joins: PreparingRebalance until the two known members rejoin.
    c = h.join_dynamic(client_id="new")[0]
    assert h.group().state is GroupState.PREPARING_REBALANCE
    assert h.heartbeat(members[0], 1) == ErrorCode.REBALANCE_IN_PROGRESS
    a = h.join(member_id=members[0])[0]
    assert h.answer(c) is None
    b = h.join(member_id=members[1])[0]
    joins = [h.answer(x) for x in (a, b, c)]
    assert {j.generation_id for j in joins} == {2}
    assert sum(1 for j in joins if j.members) == 1, "only the leader gets the member list"
    assert h.group().current_rebalance.cause == "member-joined"


def test_stable_member_rejoin_with_same_protocols_gets_current_generation():
    h = ShardHarness()
    assignments = h.form_group(2)
    follower = next(m for m in assignments if not h.group().is_leader(m))
    _, response = h.join(member_id=follower, client_id="c1")
    assert codes(response) == 0 and response.generation_id == 1 and not response.members
    assert h.group().state is GroupState.STABLE


def test_leader_rejoin_in_stable_triggers_rebalance_with_its_reason():
    h = ShardHarness()
    h.form_group(2)
    leader = h.group().leader_id
    h.join(member_id=leader, reason="metadata-change: t has 8 partitions")
    assert h.group().state is GroupState.PREPARING_REBALANCE
    assert h.group().current_rebalance.cause == "metadata-change"
    assert h.group().current_rebalance.detail == "t has 8 partitions"


def test_subscription_change_triggers_rebalance():
    h = ShardHarness()
    assignments = h.form_group(2)
    follower = next(m for m in assignments if not h.group().is_leader(m))
    h.join(member_id=follower, topics=("t", "u"))
    assert h.group().state is GroupState.PREPARING_REBALANCE
    assert h.group().current_rebalance.cause == "subscription-change"


def test_repeated_join_in_completing_rebalance_gets_same_answer():
    h = ShardHarness()
    a = h.join_dynamic()[0]
    h.run_until_idle(100)
    member = h.answer(a).member_id
    _, again = h.join(member_id=member)
    assert codes(again) == 0 and again.generation_id == 1 and again.leader == member


# ---------------------------------------------------------------------------- SyncGroup


def test_sync_installs_leaders_assignment_and_answers_parked_followers():
    h = ShardHarness()
    handles = [h.join_dynamic(client_id=f"c{i}")[0] for i in range(2)]
    h.run_until_idle(100)
    joins = [h.answer(x) for x in handles]
    leader = next(j for j in joins if j.leader == j.member_id)
    follower = next(j for j in joins if j is not leader)
    fh, parked = h.sync(follower.member_id, 1)
    assert parked is None and h.group().state is GroupState.COMPLETING_REBALANCE
    plan = {leader.member_id: assignment(TopicPartition("t", 0)), follower.member_id: assignment(TopicPartition("t", 1))}
    lh, _ = h.sync(leader.member_id, 1, assignments=plan)
    assert h.group().state is GroupState.STABLE
    assert partitions_of(h.answer(fh).assignment) == [TopicPartition("t", 1)]
    assert partitions_of(h.answer(lh).assignment) == [TopicPartition("t", 0)]
    [summary] = h.group().rebalances
    assert summary.generation_id == 1 and summary.cause == "member-joined"
    assert {d.member_id: d.assigned for d in summary.diffs} == {
        leader.member_id: (TopicPartition("t", 0),), follower.member_id: (TopicPartition("t", 1),)}
    assert "GroupRebalanced" in h.event_names()


def test_sync_errors():
    h = ShardHarness()
    assignments = h.form_group(2)
    member = next(iter(assignments))
    assert codes(h.sync("ghost", 1)[1]) == ErrorCode.UNKNOWN_MEMBER_ID
    assert codes(h.sync(member, 7)[1]) == ErrorCode.ILLEGAL_GENERATION
    assert codes(h.sync(member, 1, group="nope")[1]) == ErrorCode.UNKNOWN_MEMBER_ID
    # Stable: a late SyncGroup gets the installed assignment at once.
    assert h.sync(member, 1)[1].assignment == assignments[member]
    h.join_dynamic(client_id="x")
    assert codes(h.sync(member, 1)[1]) == ErrorCode.REBALANCE_IN_PROGRESS


def test_join_during_completing_rebalance_answers_parked_syncs_with_rebalance_in_progress():
    h = ShardHarness()
    handles = [h.join_dynamic(client_id=f"c{i}")[0] for i in range(2)]
    h.run_until_idle(100)
    follower = next(h.answer(x) for x in handles if h.answer(x).leader != h.answer(x).member_id)
    fh, _ = h.sync(follower.member_id, 1)
    h.join_dynamic(client_id="late")
    assert codes(h.answer(fh)) == ErrorCode.REBALANCE_IN_PROGRESS
    assert h.group().state is GroupState.PREPARING_REBALANCE


# ---------------------------------------------------------------------------- Heartbeat, sessions


def test_heartbeat_errors_by_state():
    h = ShardHarness()
    assignments = h.form_group(2)
    a, b = list(assignments)
    assert h.heartbeat(a, 1) == 0
    assert h.heartbeat(a, 0) == ErrorCode.ILLEGAL_GENERATION
    assert h.heartbeat("ghost", 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert h.heartbeat(a, 1, group="other") == ErrorCode.UNKNOWN_MEMBER_ID
    h.join_dynamic(client_id="new")
    assert h.heartbeat(b, 1) == ErrorCode.REBALANCE_IN_PROGRESS


def test_session_timeout_removes_member_and_rebalances():
    h = ShardHarness()
    assignments = h.form_group(3, session_ms=3000)
    a, b, c = list(assignments)
    for _ in range(4):
        h.advance(1000)
        h.heartbeat(a, 1)
        h.heartbeat(b, 1)
    assert c not in h.group().members
    assert h.group().state is GroupState.PREPARING_REBALANCE
    assert h.group().current_rebalance.cause == "session-timeout"
    assert h.group().current_rebalance.member_id == c
    # The two survivors rejoin and the group moves on without c.
    ja, jb = h.join(member_id=a)[0], h.join(member_id=b)[0]
    assert h.answer(ja).generation_id == 2 == h.answer(jb).generation_id


def test_rebalance_timeout_removes_members_that_do_not_rejoin():
    h = ShardHarness()
    assignments = h.form_group(2, rebalance_ms=5000, session_ms=60_000)
    a, b = list(assignments)
    h.join(member_id=a, reason="metadata-change: more partitions", rebalance_ms=5000, session_ms=60_000)
    h.advance(4999)
    h.heartbeat(b, 1)  # b keeps heartbeating but never rejoins (stuck outside poll)
    assert b in h.group().members
    h.advance(1)
    assert b not in h.group().members
    assert h.group().state is GroupState.COMPLETING_REBALANCE and h.group().generation_id == 2
    assert "GroupRebalanceTimedOut" in h.event_names()


def test_pending_member_expires_and_join_completes():
    h = ShardHarness()
    assignments = h.form_group(1, session_ms=2000)
    [a] = list(assignments)
    _, first = h.join(client_id="slow", session_ms=2000)  # MEMBER_ID_REQUIRED, never comes back
    h.join(member_id=a, reason="member-rejoined: test")
    assert h.group().state is GroupState.PREPARING_REBALANCE  # waiting for the pending member
    h.advance(2000)
    assert first.member_id not in h.group().pending_members
    assert h.group().state is GroupState.COMPLETING_REBALANCE


def test_sync_deadline_removes_members_that_never_sync():
    h = ShardHarness()
    handles = [h.join_dynamic(client_id=f"c{i}", rebalance_ms=4000)[0] for i in range(2)]
    h.run_until_idle(100)
    joins = [h.answer(x) for x in handles]
    leader = next(j for j in joins if j.leader == j.member_id)
    h.sync(leader.member_id, 1, assignments={})
    assert h.group().state is GroupState.STABLE
    h.advance(4000)
    assert len(h.group().members) == 1
    assert h.group().current_rebalance.cause == "poll-interval-exceeded"


def test_last_member_leaving_empties_group_and_bumps_generation():
    h = ShardHarness()
    assignments = h.form_group(1)
    [a] = list(assignments)
    response = h.leave(a, reason="consumer closed")
    assert codes(response.members[0]) == 0
    group = h.group()
    assert group.state is GroupState.EMPTY and group.generation_id == 2 and not group.members
    assert group.rebalances[-1].cause == "member-left"
    assert "GroupEmptied" in h.event_names()


def test_leave_errors_and_pending_member_leave():
    h = ShardHarness()
    h.form_group(1)
    assert codes(h.leave("ghost").members[0]) == ErrorCode.UNKNOWN_MEMBER_ID
    assert codes(h.leave("x", group="none")) == ErrorCode.UNKNOWN_MEMBER_ID
    _, first = h.join(client_id="p")
    assert codes(h.leave(first.member_id).members[0]) == 0
    assert not h.group().pending_members


def test_leave_of_parked_joiner_answers_its_join():
    h = ShardHarness()
    assignments = h.form_group(2)
    a, b = list(assignments)
    ja = h.join(member_id=a, reason="member-rejoined: x")[0]
    h.leave(a)
    assert codes(h.answer(ja)) == ErrorCode.UNKNOWN_MEMBER_ID


def test_poll_interval_leave_reason_is_the_cause():
    h = ShardHarness()
    assignments = h.form_group(2)
    a, _ = list(assignments)
    h.leave(a, reason="poll-interval-exceeded: max.poll.interval.ms=1000 passed")
    assert h.group().current_rebalance.cause == "poll-interval-exceeded"


# ---------------------------------------------------------------------------- static membership


def test_static_member_restart_within_session_gets_same_assignment_without_rebalance():
    h = ShardHarness()
    handles = [h.join(instance=f"i{i}", client_id=f"c{i}")[0] for i in range(2)]
    h.run_until_idle(100)
    joins = [h.answer(x) for x in handles]
    assignments = h.complete_sync(joins)
    generation = h.group().generation_id
    old_b = joins[1].member_id
    # i1 restarts: joins with no member id and its instance id.
    _, rejoin = h.join(instance="i1", client_id="c1")
    assert codes(rejoin) == 0 and rejoin.generation_id == generation and rejoin.member_id != old_b
    assert h.group().state is GroupState.STABLE
    _, synced = h.sync(rejoin.member_id, generation, instance="i1")
    assert synced.assignment == assignments[old_b]
    assert h.group().generation_id == generation, "no rebalance"
    # The old incarnation is fenced.
    assert h.heartbeat(old_b, generation, instance="i1") == ErrorCode.FENCED_INSTANCE_ID
    assert h.commit(old_b, generation, {TopicPartition("t", 0): 5}, instance="i1") == {
        TopicPartition("t", 0): ErrorCode.FENCED_INSTANCE_ID}


def test_static_leader_rejoin_is_told_to_skip_assignment():
    h = ShardHarness()
    handles = [h.join(instance=f"i{i}")[0] for i in range(2)]
    h.run_until_idle(100)
    joins = [h.answer(x) for x in handles]
    h.complete_sync(joins)
    leader = next(j for j in joins if j.leader == j.member_id)
    instance = "i0" if leader is joins[0] else "i1"
    _, rejoin = h.join(instance=instance)
    assert rejoin.leader == rejoin.member_id and rejoin.skip_assignment and rejoin.members


def test_static_member_that_does_not_rejoin_stays_until_its_session_ends():
    h = ShardHarness()
    handles = [h.join(instance=f"i{i}", session_ms=5000)[0] for i in range(2)]
    h.run_until_idle(100)
    joins = [h.answer(x) for x in handles]
    h.complete_sync(joins)
    a = joins[0].member_id
    h.join(member_id=a, instance="i0", reason="metadata-change: x")  # starts a rebalance
    h.advance(30_000)  # past the rebalance timeout: static i1 is not removed by it...
    assert len(h.group().members) <= 2
    assert joins[1].member_id not in h.group().members, "...but its session timeout removed it"


def test_static_member_with_wrong_member_id_is_fenced_on_join():
    h = ShardHarness()
    handles = [h.join(instance="i0")[0]]
    h.run_until_idle(100)
    h.complete_sync([h.answer(handles[0])])
    assert codes(h.join(member_id="other", instance="i0")[1]) == ErrorCode.FENCED_INSTANCE_ID
    assert codes(h.join(member_id="other", instance="unknown")[1]) == ErrorCode.UNKNOWN_MEMBER_ID
    real = h.answer(handles[0]).member_id
    _, replaced = h.join(instance="i0")
    assert codes(h.join(member_id=real, instance="i0")[1]) == ErrorCode.FENCED_INSTANCE_ID
    assert replaced.member_id != real


def test_admin_removes_static_member_by_instance_id():
    h = ShardHarness()
    handles = [h.join(instance=f"i{i}")[0] for i in range(2)]
    h.run_until_idle(100)
    h.complete_sync([h.answer(x) for x in handles])
    response = h.leave("", instance="i1")
    assert codes(response.members[0]) == 0 and "i1" not in h.group().static_members


# ---------------------------------------------------------------------------- offsets


def test_offset_commit_rules():
    h = ShardHarness()
    tp = TopicPartition("t", 0)
    # No group: a simple commit (generation -1, no member) creates an Empty group with offsets.
    assert h.commit("", -1, {tp: 10}) == {tp: 0}
    assert h.group().state is GroupState.EMPTY and h.fetch() == {tp: 10}
    assignments = h.form_group(2)
    a = next(iter(assignments))
    assert h.commit(a, 1, {tp: 20}) == {tp: 0}
    assert h.commit(a, 0, {tp: 21}) == {tp: ErrorCode.ILLEGAL_GENERATION}
    assert h.commit("ghost", 1, {tp: 21}) == {tp: ErrorCode.UNKNOWN_MEMBER_ID}
    assert h.commit("", -1, {tp: 21}) == {tp: ErrorCode.UNKNOWN_MEMBER_ID}
    # PreparingRebalance: the current generation may still commit (eager revocation commits).
    h.join_dynamic(client_id="z")
    assert h.commit(a, 1, {tp: 22}) == {tp: 0}
    assert h.fetch() == {tp: 22}


def test_commit_in_completing_rebalance_is_rebalance_in_progress():
    h = ShardHarness()
    a = h.join_dynamic()[0]
    h.run_until_idle(100)
    member = h.answer(a).member_id
    assert h.commit(member, 1, {TopicPartition("t", 0): 1}) == {TopicPartition("t", 0): ErrorCode.REBALANCE_IN_PROGRESS}


def test_commit_after_removal_fails_with_clear_error():
    h = ShardHarness()
    assignments = h.form_group(1, session_ms=1000)
    [a] = list(assignments)
    h.advance(1000)
    assert h.group().state is GroupState.EMPTY
    [code] = h.commit(a, 1, {TopicPartition("t", 0): 3}).values()
    assert code == ErrorCode.UNKNOWN_MEMBER_ID


def test_fetch_of_unknown_partitions_is_minus_one():
    h = ShardHarness()
    assert h.fetch("nothing") == {}
