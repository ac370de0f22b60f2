"""Benchmarks: speed and memory, measured here and written to BENCHMARKS.md (never asserted in tests)."""
