"""gRPC adapters of the lab (the only lab modules that import grpc)."""
