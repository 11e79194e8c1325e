"""The service layer: loads, lets the domain decide, persists in PostgreSQL, mirrors to Redis."""
