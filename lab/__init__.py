"""brokerlab lab package."""
