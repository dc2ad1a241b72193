"""Throughput of :meth:`clis.vlm.openai_vlm.OpenAIVLM.yes_probability` against a local fake server.

    python benchmarks/bench_vlm_client.py [--requests 200] [--latency-ms 20] [--size 64]

The server runs in this process on 127.0.0.1 and answers every request with the same canned
top_logprobs reply, after no delay (what is measured is the client: PNG and base64 encoding,
JSON, HTTP) and after ``--latency-ms`` (a stand-in for a model's forward pass: requests/s
should grow with concurrency up to about ``concurrency * 1000 / latency_ms``, showing the
client is not what limits a real server). Images are RGB noise, 64x64 unless ``--size``, one
per request: PNG encoding, which holds the GIL, grows with the size (about 65 ms for 512x512).

The server shares the interpreter (and its GIL) with the client, so the 0 ms rows are a lower
bound on what the client alone sustains.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from benchmarks.fake_chat_server import start_server
from clis.vlm.base import VLMRequest
from clis.vlm.openai_vlm import OpenAIVLM

CONCURRENCY = (1, 4, 16)
def measure(url: str, requests: list[VLMRequest], concurrency: int) -> tuple[float, int]:
    """(requests per second, failed requests) of one yes_probability batch."""
    client = OpenAIVLM(url, concurrency=concurrency, retries=0)
    try:
        client.yes_probability(requests[: max(concurrency, 4)])  # threads and sockets warmed up
        started = time.perf_counter()
        answers = client.yes_probability(requests)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return len(requests) / seconds, sum(not isinstance(a, float) for a in answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="the emulated model's latency (default 20)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    requests = [
        VLMRequest(Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8), "RGB"),
                   f"Is there a dog in the box [{k}, 10, 40, 50]? Answer Yes or No.")
        for k in range(args.requests)
    ]  # fmt: skip
    print(f"{args.requests} yes_probability requests per row, {args.size}x{args.size} noise images (one per request), "
          "server on 127.0.0.1 in this process")
    header = ("latency ms", "concurrency", "requests/s", "ms/request", "ideal req/s", "failed")
    print(" ".join(f"{name:>11}" for name in header))
    for latency_ms in (0.0, args.latency_ms):
        server = start_server(latency_ms / 1000)
        try:
            for concurrency in CONCURRENCY:
                rate, failed = measure(server.url, requests, concurrency)
                ideal = f"{concurrency * 1000 / latency_ms:.0f}" if latency_ms else "-"
                print(f"{latency_ms:>11g} {concurrency:>11} {rate:>11.0f} {1000 / rate:>11.2f} {ideal:>11} {failed:>11}")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
