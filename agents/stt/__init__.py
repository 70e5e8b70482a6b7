"""Speech-to-text engines as livekit-agents STT plugins."""
