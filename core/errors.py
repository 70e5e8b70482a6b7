"""The errors Kaiwa's own code raises, on one base that says whether trying again may help.

Like livekit-agents' APIError: a caller that retries looks at `retryable`, not at the class.
"""

from __future__ import annotations


class KaiwaError(Exception):
    """Base of Kaiwa's errors. `retryable`: the same call may succeed later (a server away,
    a timeout), rather than fail the same way again (bad input, a missing model)."""

    retryable: bool = False


class TransientError(KaiwaError):
    """A dependency is away or busy: retried under a RetryPolicy."""

    retryable = True


class UnsupportedLanguage(KaiwaError, LookupError):
    """No engine of this `role` ("speech-to-text", "translation", "voice") serves `language`."""

    def __init__(self, role: str, language: str, detail: str = "") -> None:
        self.role, self.language = role, language
        super().__init__(f"no {role} for language {language!r}" + (f": {detail}" if detail else ""))
