"""brokerlab client package."""
