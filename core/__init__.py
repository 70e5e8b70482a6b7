"""The bottom layer: what the agents, the API and the CLI share.

`kaiwa` may import `agents` and `api`; both of those may import `core`; neither imports the
other, and `core` imports none of them (`make check` enforces it). Nothing here loads a
model, opens a connection or imports livekit-agents, so every process can afford it.
"""
