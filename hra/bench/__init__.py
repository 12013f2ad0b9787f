"""Benchmarks of the ML package (each module runnable with ``python -m hra.bench.<name>``)."""
