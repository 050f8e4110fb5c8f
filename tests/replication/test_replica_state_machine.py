"""Hypothesis state machine for the leader's replica state (node/replication/replica_state.py).

One leader epoch of one partition: the leader appends, followers fetch (reporting their log end
offset, then receiving data), time passes, the leader proposes ISR shrinks and expansions, and
the controller commits, rejects or makes its own ISR changes (a fenced broker dropped) at any
moment, also while a proposal is pending. After every step the replica manager's rule runs
(high watermark = max(old, min log end of the maximal ISR)) and the invariants are checked:

* the high watermark never goes back within the epoch and never passes the leader's log end;
* it never exceeds the log end offset any ISR member (committed or maximal) really has, so
  every offset below it is on every ISR member;
* the ISR always holds the leader, and a pending proposal never coexists with a second one.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from node.replication.replica_state import LeaderState

LEADER = 1
FOLLOWERS = (2, 3, 4)
LAG_MS = 1_000


class LeaderReplicaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now_ms = 0
        self.leader_end = 0
        self.high_watermark = 0
        self.partition_epoch = 0
        # What each follower really has (a prefix of the leader's log).
        self.follower_end = dict.fromkeys(FOLLOWERS, 0)
        self.state = LeaderState.start(LEADER, 0, 0, [LEADER, *FOLLOWERS], [LEADER, *FOLLOWERS], 0, self.now_ms)
        self.committed_history: list[list[int]] = []

    def _recompute(self) -> None:
        self.high_watermark = self.state.next_high_watermark(self.high_watermark, self.leader_end)

    # ------------------------------------------------------------------ the leader and followers

    @rule(records=st.integers(1, 5))
    def append(self, records: int) -> None:
        self.leader_end += records
        self._recompute()  # an ISR of one commits at once

    @rule(follower=st.sampled_from(FOLLOWERS), got=st.integers(0, 6))
    def follower_fetch(self, follower: int, got: int) -> None:
        """The fetch reports the follower's log end; its answer then brings up to ``got`` records."""
        self.state.update_follower(follower, self.follower_end[follower], self.leader_end, self.now_ms, 7)
        self._recompute()
        proposal = self.state.maybe_expand_isr(follower, self.high_watermark, eligible=True)
        if proposal is not None:
            assert LEADER in proposal and follower in proposal
            self.state.propose_isr(proposal, "caught_up")
        self.follower_end[follower] = min(self.leader_end, self.follower_end[follower] + got)

    @rule(ms=st.integers(1, 800))
    def time_passes(self, ms: int) -> None:
        self.now_ms += ms

    @rule()
    def shrink_check(self) -> None:
        proposal = self.state.maybe_shrink_isr(self.leader_end, self.now_ms, LAG_MS)
        if proposal is not None:
            assert LEADER in proposal and len(proposal) < len(self.state.isr)
            self.state.propose_isr(proposal, "out_of_sync")

    # ------------------------------------------------------------------ the controller

    @precondition(lambda self: self.state.is_pending)
    @rule()
    def controller_commits(self) -> None:
        self.partition_epoch += 1
        assert self.state.apply_committed(self.state.pending_isr, self.partition_epoch)
        assert not self.state.is_pending
        self._recompute()

    @precondition(lambda self: self.state.is_pending)
    @rule()
    def controller_rejects(self) -> None:
        self.state.clear_pending()
        self._recompute()

    @rule(follower=st.sampled_from(FOLLOWERS))
    def controller_drops_a_fenced_broker(self, follower: int) -> None:
        if follower not in self.state.isr:
            return
        self.partition_epoch += 1
        self.state.apply_committed([b for b in self.state.isr if b != follower], self.partition_epoch)
        assert not self.state.is_pending  # a newer partition epoch voids the proposal
        self._recompute()

    @rule()
    def stale_answer_is_ignored(self) -> None:
        before = (list(self.state.isr), self.state.partition_epoch)
        assert not self.state.apply_committed([LEADER], self.partition_epoch - 1)
        assert (list(self.state.isr), self.state.partition_epoch) == before

    # ------------------------------------------------------------------ invariants

    @invariant()
    def high_watermark_is_safe(self) -> None:
        assert 0 <= self.high_watermark <= self.leader_end
        for broker_id in set(self.state.isr) | set(self.state.maximal_isr):
            if broker_id != LEADER:
                assert self.high_watermark <= self.follower_end[broker_id], (
                    f"HW {self.high_watermark} beyond ISR member {broker_id}'s log end {self.follower_end[broker_id]}")

    @invariant()
    def high_watermark_never_goes_back(self) -> None:
        previous = getattr(self, "_previous_hw", 0)
        assert self.high_watermark >= previous
        self._previous_hw = self.high_watermark

    @invariant()
    def isr_holds_the_leader(self) -> None:
        assert LEADER in self.state.isr and LEADER in self.state.maximal_isr
        assert len(set(self.state.isr)) == len(self.state.isr)


LeaderReplicaMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
TestLeaderReplicaState = LeaderReplicaMachine.TestCase


def test_a_follower_at_the_log_end_is_caught_up_however_long_it_idles() -> None:
    state = LeaderState.start(LEADER, 0, 0, [1, 2], [1, 2], 0, now_ms=0)
    state.update_follower(2, 10, 10, now_ms=100)
    assert state.out_of_sync_replicas(10, 100_000, LAG_MS) == []
    # The leader appends: the follower is now behind, caught up as of its last fetch.
    assert state.out_of_sync_replicas(12, 100 + LAG_MS, LAG_MS) == []
    assert state.out_of_sync_replicas(12, 101 + LAG_MS, LAG_MS) == [2]
    # Fetching at the previous fetch's leader end counts as caught up as of that fetch (Kafka).
    state.update_follower(2, 10, 12, now_ms=500)
    state.update_follower(2, 12, 15, now_ms=900)
    assert state.followers[2].last_caught_up_ms == 500
    assert state.maybe_shrink_isr(15, 1_501, LAG_MS) == [1]


def test_an_unknown_follower_position_holds_the_high_watermark() -> None:
    state = LeaderState.start(LEADER, 3, 0, [1, 2, 3], [1, 2, 3], 40, now_ms=0)
    assert state.next_high_watermark(30, 50) == 30
    state.update_follower(2, 45, 50, 1)
    assert state.next_high_watermark(30, 50) == 30  # broker 3 not heard from in this epoch
    state.update_follower(3, 50, 50, 2)
    assert state.next_high_watermark(30, 50) == 45


def test_expansion_needs_the_high_watermark_and_the_epoch_start() -> None:
    state = LeaderState.start(LEADER, 3, 0, [1, 2], [1], epoch_start_offset=40, now_ms=0)
    state.update_follower(2, 35, 50, 1)
    assert state.maybe_expand_isr(2, high_watermark=30, eligible=True) is None  # before the epoch start
    state.update_follower(2, 45, 50, 2)
    assert state.maybe_expand_isr(2, high_watermark=46, eligible=True) is None  # below the HW
    assert state.maybe_expand_isr(2, high_watermark=45, eligible=False) is None  # fenced / wrong epoch
    assert state.maybe_expand_isr(2, high_watermark=45, eligible=True) == [1, 2]
