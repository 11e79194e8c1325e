"""Benchmarks: scenarios on real servers that print figures (`make bench`)."""
