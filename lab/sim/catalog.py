"""The built-in failover scenarios, as data (see lab/sim/failover.py for the format).

They cover REFERENCE.md's failover matrix for the partition leader, a follower and the
controller: hard kill, pause past the session timeout (zombie leader), two of three replicas
down, acks=1 loss, clean and hard bounces, a rolling restart, a network partition isolating
the leader, a controller crash, power loss of one broker and of all brokers with per-batch
flush and without. The default setup is REFERENCE's: RF 3, min ISR 2, acks=all, unclean
election off, session timeout 1 s, the real producer with Kafka's defaults (idempotent, five
requests in flight, linger 5 ms; lab/sim/producer_actor.py) and a live consumer; anything a
scenario leaves out is that.

Every scenario waits for full ISRs before its first fault: what it then proves depends on it
(with a lossy network, a broker may have been fenced out of an ISR just before).

How a zombie's tail or an acks=1 loss is made certain: the leader's links to its followers are
cut (they stop fetching; it still talks to the controller and the clients), a burst of acks=1
records lands on it alone, then it is paused or killed and the links healed. The followers are
still in the ISR (the cut is far shorter than replica.lag.time.max.ms: a burst waits at most
800 ms for its answers, even on a lossy network), so one of them is
elected cleanly and the ex-leader must truncate exactly that tail when it comes back.
"""

from __future__ import annotations

from typing import Any

WRITER = {"name": "writer", "acks": "all"}
# Bursts of acks=1 records to the watched partition (0), whose leader the steps target.
TAIL = {"name": "tail", "acks": 1, "start": False, "partition": 0}

CATALOG: list[dict[str, Any]] = [
    {
        "name": "leader-kill",
        "doc": "kill -9 of the leader under acks=all load (RF 3, min ISR 2): every acknowledged record "
               "is read back, no offset holds two values, no gaps; the victim rejoins the ISR",
        "broker_config": {"log.flush.policy": "none|batch"},
        "topic": {"partitions": "1..3"},
        "producers": [WRITER],
        "steps": [
            "wait 500..2000",
            "await isr-full",
            "kill leader as=victim",
            "await leader-moved-from victim timeout=10000",
            "wait 300..2000",
            "start victim",
            "await in-isr victim",
            "wait 200..1000",
        ],
        "expect": {"checks": ["fenced:victim", "no-silent-loss"]},
    },
    {
        "name": "leader-pause",
        "doc": "the leader is paused (SIGSTOP) past the session timeout with a tail only it has, then "
               "resumed: it is fenced, a follower takes over, the zombie truncates its tail and "
               "rejoins as a follower; nothing acknowledged with acks=all is lost, nothing it wrote "
               "alone is ever served",
        "topic": {"partitions": "1..2"},
        "producers": [WRITER, TAIL],
        "steps": [
            "wait 500..1500",
            "await isr-full",
            "cut leader from=followers as=zombie",
            "burst tail 5..20 within=800",
            "burst tail 1..5 within=800",
            "pause zombie",
            "heal",
            "await leader-moved-from zombie timeout=10000",
            "wait 500..2500",
            "resume zombie",
            "await in-isr zombie",
            "wait 200..1000",
        ],
        # The tail's acks=1 makes the promise acks=1's (no durability): the checks below hold
        # the acks=all writer to zero loss all the same.
        "expect": {
            "checks": ["loss-only-from:tail", "unserved:tail", "loss-equals-truncation", "fenced:zombie",
                       "truncated:zombie"],
        },
    },
    {
        "name": "two-down",
        "doc": "two of three replicas down: acks=all fails with NOT_ENOUGH_REPLICAS and nothing is "
               "acknowledged until one returns, then service resumes",
        "topic": {"partitions": "1..2"},
        "producers": [{**WRITER, "delivery_timeout_ms": 1500}],
        "steps": [
            "wait 500..1500",
            "await isr-full",
            "kill broker as=a",
            "kill broker as=b",
            "wait 50",
            "window open two-down",
            "wait 4000..7000",
            "window close two-down",
            "start a",
            "await in-isr a",
            "window open one-back",
            # Longer than the producer's longest backoff (800 ms + 20 % jitter before its 1500 ms
            # delivery timeout ends a batch): the queued batches go when it ends.
            "wait 1200..2000",
            "window close one-back",
            "start b",
            "await in-isr b",
            "wait 200..1000",
        ],
        "expect": {"checks": ["never-acked-in:two-down", "failed-in:two-down:NOT_ENOUGH_REPLICAS",
                              "acked-in:one-back", "no-silent-loss"]},
    },
    {
        "name": "acks1-loss",
        "doc": "acks=1 with a leader kill loses acknowledged records, and exactly those: the lost "
               "records are the acknowledged ones inside the ex-leader's LogTruncated ranges",
        "topic": {"partitions": "1"},
        "producers": [{"name": "writer", "acks": 1}, TAIL],
        "steps": [
            "wait 500..1500",
            "await isr-full",
            "cut leader from=followers as=old",
            "burst tail 5..25 within=800",
            "kill old",
            "heal",
            "await leader-moved-from old timeout=10000",
            "wait 300..1500",
            "start old",
            "await in-isr old",
            "wait 200..1000",
        ],
        "expect": {"checks": ["loss-equals-truncation", "no-silent-loss", "truncated:old"]},
    },
    {
        "name": "leader-bounce-clean",
        "doc": "clean stop (controlled shutdown) and restart of the leader five times in a row: zero "
               "failed acks=all produces, every controlled shutdown completes",
        "topic": {"partitions": "1..2"},
        "producers": [WRITER],
        "steps": [
            "wait 300..1000",
            "await isr-full",
            "window open clean",
            {"repeat": 5, "steps": ["bounce leader mode=clean down=0..1000", "wait 100..800"]},
            "window close clean",
        ],
        "expect": {"checks": ["zero-failed-in:clean", "controlled-shutdowns"]},
    },
    {
        "name": "leader-bounce-hard",
        "doc": "kill -9 and restart of the leader five times in a row: nothing acknowledged is lost",
        "broker_config": {"log.flush.policy": "none|batch"},
        "topic": {"partitions": "1..2"},
        "producers": [WRITER],
        "steps": [
            "wait 300..1000",
            "await isr-full",
            {"repeat": 5, "steps": ["bounce leader mode=hard down=0..1500", "wait 100..800"]},
        ],
        "expect": {"checks": ["no-silent-loss"]},
    },
    {
        "name": "rolling-restart",
        "doc": "clean restart of every broker in turn, each back in every ISR before the next: zero "
               "failed acks=all produces",
        "topic": {"partitions": "1..3"},
        "producers": [WRITER],
        "steps": [
            "wait 300..1000",
            "await isr-full",
            "window open clean",
            {"for_each": "broker", "as": "b", "order": "shuffled",
             "steps": ["stop b", "wait 0..500", "start b", "await isr-full", "wait 100..500"]},
            "window close clean",
        ],
        "expect": {"checks": ["zero-failed-in:clean", "controlled-shutdowns"]},
    },
    {
        "name": "leader-partitioned",
        "doc": "a network partition cuts the leader off from the controller and the other brokers "
               "(and, for some seeds, the clients): a new leader is elected, the old one's "
               "uncommitted appends are truncated when the partition heals; nothing acknowledged is lost",
        "topic": {"partitions": "1..2"},
        "producers": [WRITER],
        "steps": [
            "wait 500..1500",
            "await isr-full",
            "cut leader from=servers|everyone as=old",
            "await leader-moved-from old timeout=10000",
            "wait 500..3000",
            "heal",
            "await in-isr old",
            "wait 200..1000",
        ],
        "expect": {"checks": ["fenced:old", "no-silent-loss"]},
    },
    {
        "name": "controller-crash",
        "doc": "the controller crashes (kill or power loss) mid-load and a follower dies while it is "
               "down; it restarts from its journal, fences the dead broker and the cluster heals",
        "topic": {"partitions": "1..3"},
        "producers": [WRITER],
        "steps": [
            "wait 500..1500",
            "await isr-full",
            "crash controller power_loss=yes|no",
            "wait 200..1000",
            "kill follower as=f",
            "wait 500..2500",
            "start controller",
            "await fenced f timeout=10000",
            "wait 200..1500",
            "start f",
            "await in-isr f",
            "wait 200..1000",
        ],
        "expect": {"checks": ["no-silent-loss"]},
    },
    {
        "name": "power-loss-leader",
        "doc": "power loss of the leader (unflushed bytes gone) with log.flush.policy none or batch: "
               "replication keeps every acknowledged record either way",
        "broker_config": {"log.flush.policy": "none|batch"},
        "topic": {"partitions": "1..2"},
        "producers": [WRITER],
        "steps": [
            "wait 500..2000",
            "await isr-full",
            "power-loss leader as=victim",
            "wait 0..2000",
            "start victim",
            "await in-isr victim",
            "wait 200..1000",
        ],
        "expect": {"checks": ["no-silent-loss"]},
    },
    {
        "name": "power-loss-all-batch",
        "doc": "power loss of every broker at once with log.flush.policy=batch: every acknowledged "
               "record was fsynced on every ISR member, so nothing is lost",
        "broker_config": {"log.flush.policy": "batch"},
        "topic": {"partitions": "1..2"},
        "producers": [WRITER],
        "steps": [
            "wait 500..2000",
            "await isr-full",
            "power-loss all-brokers",
            "wait 0..1500",
            "start all-brokers",
            "await isr-full",
            "wait 200..1000",
        ],
        "expect": {"checks": ["no-silent-loss"]},
    },
    {
        "name": "power-loss-all-none",
        "doc": "power loss of every broker at once with log.flush.policy=none: acknowledged records "
               "that no replica fsynced are lost (Kafka's durability comes from replication, and all "
               "replicas failed together); every loss is explained by a recovery that cut the log",
        "broker_config": {"log.flush.policy": "none"},
        "topic": {"partitions": "1..2"},
        "producers": [WRITER],
        "steps": [
            "wait 500..2000",
            "await isr-full",
            "power-loss all-brokers",
            "wait 0..1500",
            "start all-brokers",
            "await isr-full",
            "wait 200..1000",
        ],
        "expect": {
            "tolerate": {name: "every replica lost its unflushed tail at once (log.flush.policy=none)"
                         for name in ("lost-write", "unseen", "inconsistent-offsets", "poll-skip",
                                      "nonmonotonic-poll", "nonmonotonic-send")},
            "checks": ["no-silent-loss"],
        },
    },
]


def scenario_names() -> list[str]:
    return [entry["name"] for entry in CATALOG]
