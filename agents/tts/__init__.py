"""Text-to-speech engines as livekit-agents TTS plugins."""
