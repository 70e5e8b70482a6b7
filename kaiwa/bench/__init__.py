"""Benchmarks: `kaiwa bench <name>` measures a capability and prints its figures."""
