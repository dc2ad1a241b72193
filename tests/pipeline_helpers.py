"""Helpers shared by the pipeline tests (plan, generate, pick, chain).

``ChatServer`` is a small OpenAI-compatible chat server on 127.0.0.1, started inside a test
(no network); ``run_cli`` runs ``clis`` the way the console script does; ``spy_on_sam_prompts``
records the boxes SAM is prompted with.
"""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run ``clis ARGS`` as the console script does; return (exit code, stdout + stderr)."""
    from clis.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# Answers that make the server misbehave at the connection level instead of replying.
HANG_UP = "<hang up>"  # close the connection without a response: http.client.RemoteDisconnected
CUT_SHORT = "<cut short>"  # promise a longer body than is sent, then close: http.client.IncompleteRead


class ChatServer:
    """Serves POST /v1/chat/completions with ``answer(body) -> str`` (or ``(status, text)``;
    a dict, sent as the whole reply with status 200; or :data:`HANG_UP` / :data:`CUT_SHORT`
    to drop the connection). ``answer`` runs on one thread per request.

    ``max_in_flight`` is the most requests that were being answered at the same time."""

    def __init__(self, answer: Callable[[dict], object]):
        self.answer = answer
        self.requests: list[dict] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    # Counted while the answer is made, not while it is sent: a client may read the
                    # reply and send its next request before this handler has returned.
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                try:
                    result = server.answer(body) if self.path == "/v1/chat/completions" else (404, "no such route")
                finally:
                    with server._lock:
                        server._in_flight -= 1
                if isinstance(result, str) and result in (HANG_UP, CUT_SHORT):
                    self.drop(cut_short=result == CUT_SHORT)
                    return
                status, text = result if isinstance(result, tuple) else (200, result)
                if isinstance(text, dict):
                    # Scripted whole replies (logprobs, odd shapes): sent exactly as given.
                    payload = text
                elif status == 200:
                    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
                else:
                    payload = {"error": {"message": text}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def drop(self, cut_short: bool) -> None:
                if cut_short:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                self.close_connection = True

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # shutdown() waits for the next poll: the default half second would dominate short tests.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ChatServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def spy_on_sam_prompts(monkeypatch) -> list:
    """Record the ``input_boxes`` every call of transformers' SAM processor receives."""
    from transformers import SamProcessor

    prompts, call = [], SamProcessor.__call__

    def recording_call(self, *args, **kwargs):
        prompts.append(kwargs.get("input_boxes"))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(SamProcessor, "__call__", recording_call)
    return prompts


def assert_mask_in_box(mask, bbox, min_inside: float = 0.95) -> None:
    """A box-prompted mask is not empty, and most of it lies in the pixels its COCO
    ``[x, y, w, h]`` box touches."""
    assert mask.any(), bbox
    x, y, w, h = bbox
    inside = mask[int(math.floor(y)) : int(math.ceil(y + h)), int(math.floor(x)) : int(math.ceil(x + w))].sum()
    assert inside >= min_inside * mask.sum(), (inside, mask.sum(), bbox)


def asked_ids(body: dict) -> list[str]:
    """Object ids of the request being answered (the last 'Objects:' line of the prompt)."""
    prompt = body["messages"][-1]["content"]
    line = re.findall(r"^Objects: (.*)$", prompt, flags=re.M)[-1]
    return re.findall(r"([a-z][a-z ]*-\d+)", line)


def careful_planner(body: dict) -> str:
    """Answers like a decent LLM, with the usual slips: code fences, trailing commas, and a
    last box that runs past the right edge (x + w = 1.1)."""
    ids = asked_ids(body)
    prompt = body["messages"][-1]["content"]
    if prompt.rstrip().endswith("Layout:"):
        n = len(ids)
        boxes = {i: [round(k / n, 4), 0.3, round(1 / n, 4), 0.5] for k, i in enumerate(ids)}
        boxes[ids[-1]][2] = round(boxes[ids[-1]][2] + 0.1, 4)
        return "```json\n" + json.dumps({"boxes": boxes})[:-1] + ",}\n```"
    labels = [i.rsplit("-", 1)[0] for i in ids]
    graph = {
        "objects": [{"id": i, "attributes": ["small"]} for i in ids],
        "relations": [{"subject": [ids[0]], "relation": "next to", "object": [ids[-1]]}] if len(ids) > 1 else [],
        "caption": "A photo of " + " and ".join(f"a {label}" for label in labels) + ".",
    }
    return "Here is the scene graph:\n" + json.dumps(graph)
