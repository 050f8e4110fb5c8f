"""Leader-side state of one partition: follower progress, the ISR and the high watermark.

Pure bookkeeping (Kafka's ``Partition`` + ``Replica`` leader half): no log, no envelopes, no
clock. The replica manager feeds it follower fetches and the committed ISR from the metadata
image, and asks it what the high watermark may be and whether the ISR should change.

ISR states (KIP-497 / KIP-841 "maximal ISR"):

=========  =======================================================================
COMMITTED  ``isr`` as the controller last committed it; no change in flight.
PENDING    an AlterPartition for ``pending_isr`` is in flight. The high watermark uses
           the *maximal* ISR (committed ∪ proposed): an expansion counts the new member at
           once, a shrink only once committed, so the HW is never computed from a set the
           controller might still reject. No second change is proposed while one is pending.
=========  =======================================================================

COMMITTED -> PENDING by ``propose_isr``; PENDING -> COMMITTED by ``apply_committed`` with a newer
partition epoch (the AlterPartition answer or the PartitionChangeRecord, whichever comes first)
or by ``clear_pending`` (the controller refused it).

Rules:
* high watermark = min(log end offset of every maximal-ISR member, the leader included); a
  follower whose log end offset is not known yet in this leadership holds it back; it only ever
  moves forward.
* caught up (Kafka's ``ReplicaState``): a fetch at the leader's log end offset makes the follower
  caught up as of that fetch; a fetch at the leader's log end offset *of the previous fetch* makes
  it caught up as of the previous fetch. Out of sync: not at the leader's log end and not caught
  up within ``replica.lag.time.max.ms``.
* a follower rejoins when its log end offset is at or past the high watermark and past the start
  of the current leader epoch, and its broker is eligible (registered, unfenced, same epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

UNKNOWN_OFFSET = -1


@dataclass(slots=True)
class FollowerProgress:
    broker_id: int
    log_end_offset: int = UNKNOWN_OFFSET
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    last_fetch_leader_log_end_offset: int = UNKNOWN_OFFSET
    broker_epoch: int = -1

    def update(self, fetch_offset: int, leader_log_end_offset: int, now_ms: int, broker_epoch: int) -> None:
        if fetch_offset >= leader_log_end_offset:
            self.last_caught_up_ms = max(self.last_caught_up_ms, now_ms)
        elif fetch_offset >= self.last_fetch_leader_log_end_offset >= 0:
            self.last_caught_up_ms = max(self.last_caught_up_ms, self.last_fetch_ms)
        self.log_end_offset = fetch_offset
        self.last_fetch_leader_log_end_offset = leader_log_end_offset
        self.last_fetch_ms = now_ms
        if broker_epoch >= 0:
            self.broker_epoch = broker_epoch

    def is_caught_up(self, leader_log_end_offset: int, now_ms: int, lag_time_max_ms: int) -> bool:
        return self.log_end_offset == leader_log_end_offset or now_ms - self.last_caught_up_ms <= lag_time_max_ms


@dataclass
class LeaderState:
    leader_id: int
    leader_epoch: int
    partition_epoch: int
    replicas: list[int]
    isr: list[int]
    # Offset at which this leader epoch started (the leader's log end when it took over).
    epoch_start_offset: int
    followers: dict[int, FollowerProgress] = field(default_factory=dict)
    pending_isr: list[int] | None = None
    # Why the pending change was proposed ("lagging"/"caught_up") and what it was based on.
    pending_reason: str = ""

    @classmethod
    def start(cls, leader_id: int, leader_epoch: int, partition_epoch: int, replicas: Iterable[int],
              isr: Iterable[int], epoch_start_offset: int, now_ms: int) -> "LeaderState":
        """A new leadership: follower positions unknown; ISR members get a full lag period
        (Kafka resets ``lastCaughtUpTimeMs`` to now for them, to 0 for the others)."""
        replicas, isr = list(replicas), list(isr)
        state = cls(leader_id, leader_epoch, partition_epoch, replicas, isr, epoch_start_offset)
        for broker_id in replicas:
            if broker_id != leader_id:
                state.followers[broker_id] = FollowerProgress(
                    broker_id, last_caught_up_ms=now_ms if broker_id in isr else 0)
        return state

    # ------------------------------------------------------------------ ISR views

    @property
    def maximal_isr(self) -> list[int]:
        if self.pending_isr is None:
            return self.isr
        return self.isr + [b for b in self.pending_isr if b not in self.isr]

    @property
    def is_pending(self) -> bool:
        return self.pending_isr is not None

    def update_replicas(self, replicas: Iterable[int], now_ms: int) -> None:
        self.replicas = list(replicas)
        for broker_id in self.replicas:
            if broker_id != self.leader_id and broker_id not in self.followers:
                self.followers[broker_id] = FollowerProgress(broker_id)
        for broker_id in [b for b in self.followers if b not in self.replicas]:
            del self.followers[broker_id]

    # ------------------------------------------------------------------ followers and the HW

    def update_follower(self, broker_id: int, fetch_offset: int, leader_log_end_offset: int, now_ms: int,
                        broker_epoch: int = -1) -> bool:
        """A follower fetched at ``fetch_offset`` (its log end offset); False if not a replica."""
        progress = self.followers.get(broker_id)
        if progress is None:
            return False
        progress.update(fetch_offset, leader_log_end_offset, now_ms, broker_epoch)
        return True

    def high_watermark_bound(self, leader_log_end_offset: int) -> int | None:
        """min log end offset over the maximal ISR (None while a member's position is unknown)."""
        bound = leader_log_end_offset
        followers = self.followers
        for broker_id in self.maximal_isr:
            if broker_id == self.leader_id:
                continue
            progress = followers.get(broker_id)
            if progress is None or progress.log_end_offset < 0:
                return None
            if progress.log_end_offset < bound:
                bound = progress.log_end_offset
        return bound

    def next_high_watermark(self, current: int, leader_log_end_offset: int) -> int:
        """The high watermark after this change: never lower than ``current``."""
        bound = self.high_watermark_bound(leader_log_end_offset)
        return bound if bound is not None and bound > current else current

    # ------------------------------------------------------------------ ISR changes

    def out_of_sync_replicas(self, leader_log_end_offset: int, now_ms: int, lag_time_max_ms: int) -> list[int]:
        out = []
        for broker_id in self.isr:
            if broker_id == self.leader_id:
                continue
            progress = self.followers.get(broker_id)
            if progress is None or not progress.is_caught_up(leader_log_end_offset, now_ms, lag_time_max_ms):
                out.append(broker_id)
        return out

    def maybe_shrink_isr(self, leader_log_end_offset: int, now_ms: int, lag_time_max_ms: int) -> list[int] | None:
        """The smaller ISR to propose, or None (nothing lags, or a change is already pending)."""
        if self.is_pending:
            return None
        lagging = self.out_of_sync_replicas(leader_log_end_offset, now_ms, lag_time_max_ms)
        if not lagging:
            return None
        return [b for b in self.isr if b not in lagging]

    def is_follower_in_sync(self, broker_id: int, high_watermark: int) -> bool:
        progress = self.followers.get(broker_id)
        return (
            progress is not None
            and progress.log_end_offset >= high_watermark
            and progress.log_end_offset >= self.epoch_start_offset
        )

    def maybe_expand_isr(self, broker_id: int, high_watermark: int, eligible: bool) -> list[int] | None:
        """The larger ISR to propose if ``broker_id`` has caught up, else None."""
        if self.is_pending or broker_id in self.isr or broker_id == self.leader_id or not eligible:
            return None
        if not self.is_follower_in_sync(broker_id, high_watermark):
            return None
        return self.isr + [broker_id]

    def propose_isr(self, new_isr: list[int], reason: str) -> None:
        self.pending_isr = list(new_isr)
        self.pending_reason = reason

    def clear_pending(self) -> None:
        self.pending_isr = None
        self.pending_reason = ""

    def apply_committed(self, isr: Iterable[int], partition_epoch: int) -> bool:
        """The controller's committed ISR (from the journal or an AlterPartition answer).

        Ignored when not newer than what we hold; clears a pending change either way it went
        (the controller decided). Returns True if the ISR or partition epoch changed.
        """
        if partition_epoch < self.partition_epoch:
            return False
        isr = list(isr)
        changed = partition_epoch > self.partition_epoch or isr != self.isr
        if partition_epoch > self.partition_epoch:
            self.clear_pending()
        self.isr = isr
        self.partition_epoch = partition_epoch
        return changed
