"""Redis, the fast mirror: per-slot holds, queue and counts kept by Lua scripts, and events."""
