"""A local stand-in for an OpenAI-compatible judge endpoint (standard library only).

It speaks the chat-completions format and grades deterministically: 5 when the
candidate equals the reference, 2 otherwise, and an unusable reply for "???".
The tests use it with the real ``openai`` client; it records every request.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PAIR = re.compile(r"Reference answer:\n(.*)\n\nCandidate answer:\n(.*)\Z", re.DOTALL)


def _grade(user_message: str) -> str:
    reference, candidate = _PAIR.search(user_message).groups()
    if candidate == "???":
        return "I cannot grade this."
    if candidate == reference:
        return "Score: 5\nMatches the reference."  # the plain-text form
    return '{"score": 2, "reason": "Differs from the reference."}'  # the JSON form


class StandIn(BaseHTTPRequestHandler):
    requests: list[dict]
    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        with self.lock:
            type(self).in_flight += 1
            type(self).most_in_flight = max(self.most_in_flight, self.in_flight)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        time.sleep(0.02)  # long enough for concurrent requests to overlap
        content = _grade(body["messages"][-1]["content"])
        reply = json.dumps(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        with self.lock:
            type(self).in_flight -= 1
        status = 200 if self.path == "/v1/chat/completions" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def judge_stand_in() -> Iterator[tuple[str, type[StandIn]]]:
    """The stand-in's base URL and its handler class (which records the requests)."""
    handler = type("Handler", (StandIn,), {"requests": [], "in_flight": 0, "most_in_flight": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()
