"""The watchdog: gives a call whose agent died a new one, with the call's context.

Open-source LiveKit drops a dead worker's jobs and never dispatches again; a SIGKILLed
agent even stays in its room ~15 s. Each job therefore holds a short lease in Redis
(agents/lease.py), and one watchdog (a service of its own, never inside a worker) looks at
every room each second: a room with a caller and no live lease gets a new agent, which
restores the call from the history API. See docs/scale.md.
"""
