"""The Kaiwa API: access tokens, LiveKit webhooks, history, and the web app's files."""
