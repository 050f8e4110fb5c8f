"""gRPC plumbing shared by the broker, the controller and the client."""
