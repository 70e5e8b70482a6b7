"""Evaluations that measure the engines on the project's own data (`kaiwa eval ...`)."""
