"""A stand-in for the language model server: OpenAI's chat-completions protocol, answered
from a script, on a thread of its own (a stack outlives each test's event loop).

For what a real model does not do on cue: fail every check on a translation, or fail
outright (`ModelServerError`). Clients reach it through the real openai client, as they
reach the llama.cpp server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Request = dict[str, Any]


class ModelServerError(Exception):
    """Raised by a script: the request is answered with this HTTP status and an error body,
    as a model server that is overloaded or broken answers."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ScriptedChatModel:
    """Answers each `POST /v1/chat/completions` with `answer(request)`, and keeps the
    requests it was sent (in `requests`, in order)."""

    def __init__(self, answer: Callable[[Request], str]) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.requests.append(body)
                try:
                    content = model.answer(body)
                except ModelServerError as error:
                    self._send(error.status, {"error": {"message": "scripted failure"}})
                    return
                self._send(
                    200,
                    {
                        "id": f"scripted-{len(model.requests)}",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model", "scripted"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )

            def _send(self, status: int, body: dict[str, Any]) -> None:
                reply = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is the requests it keeps

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedChatModel:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def replies(*texts: str) -> Callable[[Request], str]:
    """A script that answers with `texts`, one per request, in order."""
    queue = list(texts)
    return lambda _request: queue.pop(0)
