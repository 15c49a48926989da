"""Real servers the tests start and stop themselves (PostgreSQL, ...), on loopback only."""
