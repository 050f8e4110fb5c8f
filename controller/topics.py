"""CreateTopics and DeleteTopics: Kafka's validation, then TopicRecord/PartitionRecords or RemoveTopicRecords.

Each topic in a request succeeds or fails on its own (per-topic error codes, as in Kafka); the
records of every successful topic are written as one journal append. Checks, in Kafka's order:
duplicate names in one request (INVALID_REQUEST), name rules (INVALID_TOPIC_EXCEPTION), an
existing topic (TOPIC_ALREADY_EXISTS), a '.'/'_' collision (INVALID_TOPIC_EXCEPTION), configs
(INVALID_CONFIG), then partitions and replication factor or the manual assignment.
"""

from __future__ import annotations

import base64
import re
from collections import Counter

from brokerlab.errors import ErrorCode, KafkaError
from brokerlab.sansio import Random, TraceEvent
from brokerlab.v1.controller_pb2 import (
    CreatableTopic,
    CreatableTopicResult,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeletableTopicResult,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
)
from brokerlab.v1.metadata_pb2 import (
    MetadataRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicConfig,
    TopicRecord,
)
from controller.config import ControllerConfig
from controller.placement import place_replicas, validate_manual_assignment
from controller.result import ControllerResult
from controller.state import ControllerState
from controller.topic_config import validate_topic_configs

MAX_TOPIC_NAME_LENGTH = 249
_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate; raises KafkaError(INVALID_TOPIC_EXCEPTION)."""

    def invalid(message: str) -> KafkaError:
        return KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, message)

    if not name:
        raise invalid("Topic name is illegal, it can't be empty")
    if name in (".", ".."):
        raise invalid('Topic name cannot be "." or ".."')
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise invalid(f"Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LENGTH} characters, topic name: {name}")
    if not _LEGAL_NAME.fullmatch(name):
        raise invalid(f'Topic name "{name}" is illegal, it contains a character other than ASCII alphanumerics, \'.\', \'_\' and \'-\'')


def collision_key(name: str) -> str:
    """Names equal after this collide: Kafka metric names turn '.' into '_'."""
    return name.replace(".", "_")


def new_topic_id(random: Random, used: set[str]) -> str:
    """A random 16-byte id in Kafka's text form (URL-safe base64, no padding), never reused."""
    while True:
        raw = random.getrandbits(128).to_bytes(16, "big")
        topic_id = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        # Kafka also avoids the all-zero id and ids starting with '-' (they read as CLI flags).
        if any(raw) and not topic_id.startswith("-") and topic_id not in used:
            return topic_id


def create_topics(state: ControllerState, request: CreateTopicsRequest, config: ControllerConfig, random: Random) -> ControllerResult:
    result = ControllerResult(CreateTopicsResponse())
    name_counts = Counter(topic.name for topic in request.topics)
    taken = {collision_key(name): name for name in state.topic_ids}
    used_ids = set(state.used_topic_ids)
    for topic in request.topics:
        try:
            if name_counts[topic.name] > 1:
                raise KafkaError(ErrorCode.INVALID_REQUEST, f"Topic '{topic.name}' appears more than once in the request.")
            validate_topic_name(topic.name)
            if topic.name in state.topic_ids or taken.get(collision_key(topic.name)) == topic.name:
                raise KafkaError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{topic.name}' already exists.")
            other = taken.get(collision_key(topic.name))
            if other is not None:
                raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Topic '{topic.name}' collides with existing topic: {other}")
            configs = validate_topic_configs((c.name, c.value) for c in topic.configs)
            assignment, isrs = _assign(state, topic, config, random)
        except KafkaError as exc:
            result.response.topics.append(
                CreatableTopicResult(
                    name=topic.name, error_code=int(exc.code), error_message=exc.message, num_partitions=-1, replication_factor=-1
                )
            )
            continue
        taken[collision_key(topic.name)] = topic.name
        topic_id = ""
        if not request.validate_only:
            topic_id = new_topic_id(random, used_ids)
            used_ids.add(topic_id)
            result.records.extend(_topic_records(topic.name, topic_id, configs, assignment, isrs))
            result.events.append(
                TraceEvent(
                    "TopicCreated",
                    {
                        "topic": topic.name,
                        "topic_id": topic_id,
                        "partitions": len(assignment),
                        "replication_factor": len(assignment[0]),
                    },
                )
            )
        result.response.topics.append(
            CreatableTopicResult(
                name=topic.name, topic_id=topic_id, num_partitions=len(assignment), replication_factor=len(assignment[0])
            )
        )
    return result


def _assign(state: ControllerState, topic: CreatableTopic, config: ControllerConfig, random: Random) -> tuple[list[list[int]], list[list[int]]]:
    """Replica lists and initial ISRs; the leader is the first ISR member."""
    if topic.assignments:
        if topic.num_partitions != -1 or topic.replication_factor != -1:
            raise KafkaError(
                ErrorCode.INVALID_REQUEST,
                "A manual partition assignment was specified, but numPartitions or replicationFactor was not set to -1.",
            )
        assignment = validate_manual_assignment(
            [(a.partition, list(a.broker_ids)) for a in topic.assignments], set(state.brokers)
        )
        isrs = []
        for partition, replicas in enumerate(assignment):
            isr = [b for b in replicas if state.is_unfenced(b)]
            if not isr:
                raise KafkaError(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"All brokers specified in the manual partition assignment for partition {partition} are fenced.",
                )
            isrs.append(isr)
        return assignment, isrs
    num_partitions = config.num_partitions if topic.num_partitions == -1 else topic.num_partitions
    replication_factor = config.default_replication_factor if topic.replication_factor == -1 else topic.replication_factor
    live = [(b.broker_id, b.rack) for b in state.unfenced_brokers()]
    assignment = place_replicas(live, num_partitions, replication_factor, random)
    return assignment, [list(replicas) for replicas in assignment]


def _topic_records(name: str, topic_id: str, configs: dict[str, str], assignment, isrs) -> list[MetadataRecord]:
    topic_record = TopicRecord(name=name, topic_id=topic_id, configs=[TopicConfig(name=k, value=v) for k, v in configs.items()])
    records = [MetadataRecord(topic=topic_record)]
    for partition, (replicas, isr) in enumerate(zip(assignment, isrs)):
        records.append(
            MetadataRecord(
                partition=PartitionRecord(
                    topic_id=topic_id,
                    partition=partition,
                    replicas=replicas,
                    isr=isr,
                    leader_id=isr[0],
                    leader_epoch=0,
                    partition_epoch=0,
                )
            )
        )
    return records


def delete_topics(state: ControllerState, request: DeleteTopicsRequest) -> ControllerResult:
    result = ControllerResult(DeleteTopicsResponse())
    name_counts = Counter(request.names)
    for name in request.names:
        topic = state.topic_by_name(name)
        if name_counts[name] > 1:
            code, message = ErrorCode.INVALID_REQUEST, f"Topic '{name}' appears more than once in the request."
        elif topic is None:
            code, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic-partition."
        else:
            code, message = ErrorCode.NONE, ""
            result.records.append(MetadataRecord(remove_topic=RemoveTopicRecord(topic_id=topic.topic_id)))
            result.events.append(
                TraceEvent("TopicDeleted", {"topic": name, "topic_id": topic.topic_id, "partitions": len(topic.partitions)})
            )
        result.response.topics.append(DeletableTopicResult(name=name, error_code=int(code), error_message=message))
    return result
