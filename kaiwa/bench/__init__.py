"""Benchmarks: `kaiwa bench <name>` runs the real stack and prints measured figures."""
