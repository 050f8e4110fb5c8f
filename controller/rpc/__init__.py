"""gRPC adapters of the controller (the only controller modules that import grpc)."""
