"""The local deployment: install, configure, start and stop the real services.

`kaiwa up` and the test fixtures share this code, so the tests exercise the same
processes, configs and readiness checks that a user runs.
"""
