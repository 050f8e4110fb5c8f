"""Error answers for every GroupService rpc, shaped like Kafka's (per partition / per member).

Used when a request cannot reach its group at all (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
a failed write) and by the coordinator for its own errors.
"""

from __future__ import annotations

from typing import Any, Callable

from brokerlab.errors import ErrorCode, error_name
from brokerlab.v1 import group_pb2


def _join(request: group_pb2.JoinGroupRequest, code: int, message: str) -> group_pb2.JoinGroupResponse:
    return group_pb2.JoinGroupResponse(error_code=code, error_message=message, generation_id=-1,
                                       member_id=request.member_id)


def _sync(request, code: int, message: str) -> group_pb2.SyncGroupResponse:
    return group_pb2.SyncGroupResponse(error_code=code, error_message=message)


def _heartbeat(request, code: int, message: str) -> group_pb2.HeartbeatResponse:
    return group_pb2.HeartbeatResponse(error_code=code, error_message=message)


def _leave(request, code: int, message: str) -> group_pb2.LeaveGroupResponse:
    return group_pb2.LeaveGroupResponse(error_code=code, error_message=message)


def _offset_commit(request: group_pb2.OffsetCommitRequest, code: int, message: str) -> group_pb2.OffsetCommitResponse:
    response = group_pb2.OffsetCommitResponse()
    for topic in request.topics:
        out = response.topics.add(name=topic.name)
        for p in topic.partitions:
            out.partitions.add(partition_index=p.partition_index, error_code=code, error_message=message)
    return response


def _offset_fetch(request, code: int, message: str) -> group_pb2.OffsetFetchResponse:
    return group_pb2.OffsetFetchResponse(error_code=code, error_message=message)


def _describe(request: group_pb2.DescribeGroupsRequest, code: int, message: str) -> group_pb2.DescribeGroupsResponse:
    return group_pb2.DescribeGroupsResponse(groups=[
        group_pb2.DescribedGroup(group_id=g, error_code=code, error_message=message) for g in request.groups])


def _delete(request: group_pb2.DeleteGroupsRequest, code: int, message: str) -> group_pb2.DeleteGroupsResponse:
    return group_pb2.DeleteGroupsResponse(results=[
        group_pb2.DeletableGroupResult(group_id=g, error_code=code, error_message=message)
        for g in request.groups_names])


def _list(request, code: int, message: str) -> group_pb2.ListGroupsResponse:
    return group_pb2.ListGroupsResponse(error_code=code, error_message=message)


def _find(request: group_pb2.FindCoordinatorRequest, code: int, message: str) -> group_pb2.FindCoordinatorResponse:
    return group_pb2.FindCoordinatorResponse(coordinators=[
        group_pb2.Coordinator(group_id=g, node_id=-1, error_code=code, error_message=message)
        for g in request.group_ids])


_BUILDERS: dict[str, Callable[[Any, int, str], Any]] = {
    "JoinGroup": _join,
    "SyncGroup": _sync,
    "Heartbeat": _heartbeat,
    "LeaveGroup": _leave,
    "OffsetCommit": _offset_commit,
    "OffsetFetch": _offset_fetch,
    "DescribeGroups": _describe,
    "DeleteGroups": _delete,
    "ListGroups": _list,
    "FindCoordinator": _find,
}
GROUP_RPCS = frozenset(_BUILDERS)


def error_response(rpc: str, request: Any, code: int, message: str = "") -> Any:
    """The answer to ``request`` (of ``rpc``) that reports ``code`` everywhere it can."""
    return _BUILDERS[rpc](request, int(code), message or error_name(code))


def write_error(code: int) -> ErrorCode:
    """What a failed __consumer_offsets write means to a group client (Kafka's mapping)."""
    if code in (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_ENOUGH_REPLICAS,
                ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, ErrorCode.REQUEST_TIMED_OUT):
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.KAFKA_STORAGE_ERROR,
                ErrorCode.FENCED_LEADER_EPOCH):
        return ErrorCode.NOT_COORDINATOR
    if code in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE):
        return ErrorCode.INVALID_COMMIT_OFFSET_SIZE
    return ErrorCode.UNKNOWN_SERVER_ERROR
