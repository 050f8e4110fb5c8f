"""brokerlab cli package."""
