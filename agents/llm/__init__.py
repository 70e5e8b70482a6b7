"""The local language model: a llama.cpp server with an OpenAI-compatible API."""
