"""Benchmarks of Kaiwa's own components, run by `kaiwa bench <name>`."""
