"""The client's gRPC plumbing: channels, stubs, metadata refresh and error mapping (ClusterLink)."""

from client.rpc.cluster_link import ClusterLink, grpc_error_to_kafka

__all__ = ["ClusterLink", "grpc_error_to_kafka"]
