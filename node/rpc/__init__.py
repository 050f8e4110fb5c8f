"""gRPC adapters of the broker: the BrokerService servicer and the transport for the core's sends."""
