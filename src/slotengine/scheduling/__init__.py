"""One-off timers (hold expiries, queue lapses) kept in Redis and sent as Taskiq tasks."""
