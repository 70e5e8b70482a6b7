"""Test helpers, not tests: real servers started as `make up` starts them (servers.py), an
API client (apiclient.py), calls driven by synthetic callers (calls.py, events.py),
synthesized speech (speech/), recordings' checks (recordings.py) and the Gemini Live
stand-in (gemini_live.py)."""
