"""Identifiers shared by every part of the cluster."""

from __future__ import annotations

from typing import NamedTuple

CONTROLLER_NODE = "controller"


class TopicPartition(NamedTuple):
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


def broker_node(broker_id: int) -> str:
    """The node name of a broker in envelopes (``broker-1``)."""
    return f"broker-{broker_id}"


def broker_id_of(node: str) -> int:
    """Inverse of :func:`broker_node`."""
    prefix, _, number = node.partition("-")
    if prefix != "broker" or not number.isdigit():
        raise ValueError(f"not a broker node name: {node!r}")
    return int(number)
