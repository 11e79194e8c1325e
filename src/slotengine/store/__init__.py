"""PostgreSQL, the system of record: Tortoise models, migrations and the queries that guard invariants."""
