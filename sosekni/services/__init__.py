"""Business rules, each a single transaction of state change plus outbox messages."""
