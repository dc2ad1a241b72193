"""A fake OpenAI-compatible chat server for the benchmark scripts (the tests have their own).

It answers at once or after a fixed latency, by what a request asks: P(Yes) = 0.8 for a
logprobs request, a short description for another request with an image, and a JSON rating
for a text-only (rater) request. It counts the requests of each kind and the most that were
in flight at once.

Example:
    >>> server = start_server(0.0)
    >>> server.url.startswith("http://127.0.0.1:"), server.kinds
    (True, {'yes': 0, 'describe': 0, 'rate': 0})
    >>> server.shutdown(); server.server_close()
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_YES_REPLY = json.dumps({
    "choices": [{
        "index": 0, "message": {"role": "assistant", "content": "Yes"},
        "logprobs": {"content": [{
            "token": "Yes", "logprob": -0.2231,
            "top_logprobs": [{"token": "Yes", "logprob": -0.2231}, {"token": "No", "logprob": -1.6094}],
        }]},
        "finish_reason": "length",
    }]
}).encode()  # fmt: skip
_DESCRIBE_REPLY = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": "A red cup on a wooden table next to a small dog."}}]}).encode()
_RATE_REPLY = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": '{"score": 4, "explanation": "the object matches"}'}}]}).encode()


class FakeChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 would make the 16-way runs wait on TCP retransmits

    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.kinds = {"yes": 0, "describe": 0, "rate": 0}
        super().__init__(("127.0.0.1", 0), _Handler)

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = 0
            self.kinds = dict.fromkeys(self.kinds, 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server naming)
        server: FakeChatServer = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        # Which reply, by a substring search: parsing the JSON would be server time.
        kind = "yes" if b'"logprobs"' in body else "describe" if b'"image_url"' in body else "rate"
        reply = {"yes": _YES_REPLY, "describe": _DESCRIBE_REPLY, "rate": _RATE_REPLY}[kind]
        with server.lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            server.kinds[kind] += 1
        try:
            if server.latency_s:
                time.sleep(server.latency_s)
        finally:
            with server.lock:
                server.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def start_server(latency_s: float) -> FakeChatServer:
    server = FakeChatServer(latency_s)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server
