"""The dialog agent ("kaiwa"): a spoken conversation with the caller, in a chosen scenario."""
