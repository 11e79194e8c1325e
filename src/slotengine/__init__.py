"""slotengine: a concurrency-safe slot reservation and queue engine."""
