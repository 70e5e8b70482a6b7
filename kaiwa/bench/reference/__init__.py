"""The reference designs the benches measure Kaiwa against, and the worker that runs them.

Each is the way LiveKit documents for the job, with the product's own engines: for a dialog,
a plain `AgentSession` with LiveKit's default turn handling (plain_dialog.py); for
interpretation, LiveKit's multi-user translator (multi_user_translator.py). They are no
product path: the product worker never runs them. Their worker (`python -m
kaiwa.bench.reference`, worker.py) registers with LiveKit under an agent name of its own,
and `kaiwa bench dialog --compare` / `kaiwa bench interpret --compare` start it beside their
stack and dispatch the reference rooms to it, so its CPU is measured apart from the
product's.

Light on purpose: the benches import the names below without loading LiveKit's agents.
"""

from __future__ import annotations

# The agent name the reference worker registers under; rooms for it are dispatched to it.
REFERENCE_AGENT_NAME = "kaiwa-reference"
# The name the benches report the reference design's figures under.
DESIGN = "livekit-example"
