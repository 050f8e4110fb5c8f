"""brokerlab controller package."""
