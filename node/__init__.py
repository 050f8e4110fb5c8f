"""brokerlab node package."""
