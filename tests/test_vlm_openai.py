"""OpenAIVLM against the fake OpenAI-compatible server of ``pipeline_helpers`` (127.0.0.1 only):
what each request carries, how P(Yes) is read from top_logprobs, retries, errors, concurrency."""

from __future__ import annotations

import base64
import io
import math
import re
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from clis.errors import InputError, ModelUnavailableError
from clis.vlm.base import RequestFailed, VLMRequest, png_bytes
from clis.vlm.openai_vlm import OpenAIVLM

from pipeline_helpers import CUT_SHORT, HANG_UP, ChatServer

DATA_URL = re.compile(r"^data:image/png;base64,([A-Za-z0-9+/=]+)$")


def noise_image(seed: int, size=(13, 7)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def prompt_of(body: dict) -> str:
    return body["messages"][0]["content"][1]["text"]


def logprobs_reply(top: list[tuple[str, float]]) -> dict:
    """A chat-completions reply whose first token has ``top`` as its top_logprobs, as vLLM sends it."""
    entries = [{"token": token, "logprob": logprob, "bytes": list(token.encode())} for token, logprob in top]
    first = {**entries[0], "top_logprobs": entries} if entries else {"token": "", "logprob": 0.0, "top_logprobs": []}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": first["token"]},
            "logprobs": {"content": [first]},
            "finish_reason": "length",
        }],
    }  # fmt: skip


@pytest.fixture
def clients():
    """Makes OpenAIVLM clients whose backoff sleeps are recorded, not slept; closes them after."""
    made = []

    def make(url: str, **options) -> tuple[OpenAIVLM, list[float]]:
        sleeps: list[float] = []
        lock = threading.Lock()

        def record(seconds: float) -> None:
            with lock:
                sleeps.append(seconds)

        client = OpenAIVLM(url, sleep=record, **options)
        made.append(client)
        return client, sleeps

    yield make
    for client in made:
        client.close()


def test_each_request_carries_the_image_as_a_png_data_url_and_the_prompt(clients):
    images = {"first prompt": noise_image(1), "second prompt": noise_image(2, size=(5, 9))}
    with ChatServer(lambda body: "ok") as server:
        client, _ = clients(server.url, model="served-vlm")
        answers = client.generate([VLMRequest(image, prompt) for prompt, image in images.items()], seed=0)
    assert answers == ["ok", "ok"]
    assert sorted(prompt_of(r["body"]) for r in server.requests) == sorted(images)
    for request in server.requests:
        [message] = request["body"]["messages"]
        assert message["role"] == "user"
        image_part, text_part = message["content"]
        assert image_part["type"] == "image_url" and text_part["type"] == "text"
        match = DATA_URL.match(image_part["image_url"]["url"])
        assert match, image_part["image_url"]["url"][:60]
        sent = Image.open(io.BytesIO(base64.b64decode(match.group(1), validate=True)))
        assert sent.format == "PNG"
        expected = images[text_part["text"]]
        assert sent.size == expected.size
        assert np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(expected))


def test_yes_probability_sums_yes_and_no_spellings_and_normalises(clients):
    ln = math.log
    scripts = {
        "plain": [("Yes", ln(0.6)), ("No", ln(0.2)), ("Maybe", ln(0.1))],  # 0.6 / 0.8
        "variants": [(" Yes", ln(0.3)), ("No", ln(0.25)), ("yes", ln(0.2)), (" NO", ln(0.05))],  # 0.5 / 0.8
        "only yes": [("Yes", ln(0.9)), ("Sure", ln(0.05))],
        "only no": [("Nope", ln(0.5)), ("no", ln(0.4))],
        # vLLM's floor for vanishing logprobs: both exp() to 0.0, the ratio still is exp(-1) : 1.
        "tiny": [("Maybe", -0.01), ("Yes", -9999.0), ("No", -9998.0)],
    }
    with ChatServer(lambda body: logprobs_reply(scripts[prompt_of(body)])) as server:
        client, _ = clients(server.url)
        probabilities = client.yes_probability([VLMRequest(noise_image(0), prompt) for prompt in scripts])
    assert probabilities[0] == pytest.approx(0.75, abs=1e-12)
    assert probabilities[1] == pytest.approx(0.625, abs=1e-12)
    assert probabilities[2] == 1.0
    assert probabilities[3] == 0.0
    assert probabilities[4] == pytest.approx(1 / (1 + math.e), abs=1e-12)
    assert len(server.requests) == len(scripts)


def test_yes_probability_asks_for_one_token_with_top_logprobs(clients):
    with ChatServer(lambda body: logprobs_reply([("Yes", -0.1)])) as server:
        client, _ = clients(server.url, model="m", top_logprobs=5, temperature=0.7, max_new_tokens=50)
        client.yes_probability([VLMRequest(noise_image(0), "q")])
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert body["model"] == "m"


def test_neither_yes_nor_no_listed_fails_that_request_only_without_retrying(clients):
    scripts = {
        "odd": [("Sure", -0.5), ("The", -0.2), ("Maybe", -2.0), ("I", -1.0)],
        "fine": [("No", -0.1)],
    }
    with ChatServer(lambda body: logprobs_reply(scripts[prompt_of(body)])) as server:
        client, sleeps = clients(server.url, top_logprobs=4)
        odd, fine = client.yes_probability([VLMRequest(noise_image(0), p) for p in scripts])
    assert isinstance(odd, RequestFailed)
    # The three likeliest tokens, likeliest first, so a user sees what the model answered.
    assert odd.reason == "no Yes or No among the top 4 first-token logprobs: 'The', 'Sure', 'I'"
    assert fine == 0.0
    assert len(server.requests) == 2 and sleeps == []


def test_a_reply_without_logprobs_is_an_input_error_and_stops_the_batch(clients):
    def answer(body):
        if prompt_of(body) != "0":
            time.sleep(0.3)  # still answering the second request when the first one has failed
        return "Yes"

    with ChatServer(answer) as server:
        client, sleeps = clients(server.url, concurrency=1)
        with pytest.raises(InputError) as error:
            client.yes_probability([VLMRequest(noise_image(0), str(k)) for k in range(6)])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"the server at {server.url}/chat/completions returned no logprobs")
    assert "--max-logprobs >= 20" in message
    assert len(server.requests) <= 2  # the queued requests were cancelled
    assert sleeps == []


def test_an_empty_top_logprobs_list_is_an_input_error(clients):
    with ChatServer(lambda body: logprobs_reply([])) as server:
        client, _ = clients(server.url)
        with pytest.raises(InputError, match="returned no logprobs"):
            client.yes_probability([VLMRequest(noise_image(0), "q")])


def test_generate_sends_seed_temperature_and_max_tokens_and_strips_the_answer(clients):
    with ChatServer(lambda body: "  A red car on a road.\n") as server:
        client, _ = clients(server.url, model="qwen2-vl", max_new_tokens=17, temperature=0.3)
        answers = client.generate([VLMRequest(noise_image(0), "Describe it.")], seed=1234)
    assert answers == ["A red car on a road."]
    [request] = server.requests
    body = request["body"]
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": "qwen2-vl", "temperature": 0.3, "max_tokens": 17, "seed": 1234,
    }  # fmt: skip


def test_empty_content_is_an_empty_answer(clients):
    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None}}]}
    with ChatServer(lambda body: reply) as server:
        client, _ = clients(server.url)
        assert client.generate([VLMRequest(noise_image(0), "q")], seed=0) == [""]


@pytest.mark.parametrize("drop", [HANG_UP, CUT_SHORT])
def test_a_dropped_connection_is_retried(clients, drop):
    attempts = []

    def answer(body):
        attempts.append(prompt_of(body))
        return drop if len(attempts) == 1 else "fine"

    with ChatServer(answer) as server:
        client, sleeps = clients(server.url)
        answers = client.generate([VLMRequest(noise_image(0), "q")], seed=0)
    assert answers == ["fine"]
    assert attempts == ["q", "q"]
    assert sleeps == [0.5]


def test_a_request_failing_on_every_attempt_fails_alone(clients):
    attempts = {"bad": 0, "good one": 0, "good two": 0}
    lock = threading.Lock()

    def answer(body):
        prompt = prompt_of(body)
        with lock:
            attempts[prompt] += 1
        return (500, "out of memory") if prompt == "bad" else prompt.upper()

    with ChatServer(answer) as server:
        client, sleeps = clients(server.url, retries=3, backoff=0.5)
        answers = client.generate([VLMRequest(noise_image(0), p) for p in attempts], seed=0)
    bad, *good = answers
    assert isinstance(bad, RequestFailed)
    assert bad.reason == f"HTTP 500 from {server.url}/chat/completions (after 4 attempts)"
    assert good == ["GOOD ONE", "GOOD TWO"]
    assert attempts == {"bad": 4, "good one": 1, "good two": 1}
    assert sleeps == [0.5, 1.0, 2.0]


def test_no_retries_means_one_attempt(clients):
    with ChatServer(lambda body: (503, "busy")) as server:
        client, sleeps = clients(server.url, retries=0)
        [answer] = client.yes_probability([VLMRequest(noise_image(0), "q")])
    assert answer.reason.endswith("(after 1 attempt)")
    assert len(server.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", [401, 404])
def test_wrong_model_or_key_is_an_input_error(clients, status):
    with ChatServer(lambda body: (status, "model 'x' does not exist")) as server:
        client, sleeps = clients(server.url, model="x")
        with pytest.raises(InputError, match=f"HTTP {status}: .*model 'x' does not exist"):
            client.generate([VLMRequest(noise_image(0), "q")], seed=0)
    assert len(server.requests) == 1 and sleeps == []


def test_a_refused_port_is_model_unavailable(clients):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client, sleeps = clients(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ModelUnavailableError, match=f"127.0.0.1:{port}/v1/chat/completions: cannot reach"):
        client.yes_probability([VLMRequest(noise_image(0), "q")])
    assert sleeps == []


def test_at_most_concurrency_requests_in_flight_and_answers_in_input_order(clients):
    def answer(body):
        time.sleep(0.05)
        return re.search(r"#\d+", prompt_of(body)).group(0)

    with ChatServer(answer) as server:
        client, _ = clients(server.url, concurrency=4)
        started = time.perf_counter()
        answers = client.generate([VLMRequest(noise_image(k), f"marker #{k} here") for k in range(16)], seed=0)
        seconds = time.perf_counter() - started
    assert answers == [f"#{k}" for k in range(16)]
    assert 2 <= server.max_in_flight <= 4
    assert seconds < 16 * 0.05  # faster than one at a time


def test_describe_names_what_decides_answers_only(clients):
    client, _ = clients("http://127.0.0.1:9/v1", model="m", grounding="qwen2", top_logprobs=7)
    other, _ = clients("http://127.0.0.1:9/v1", model="m", grounding="qwen2", top_logprobs=7, concurrency=16, retries=0)
    assert client.describe() == {
        "kind": "openai-compatible", "url": "http://127.0.0.1:9/v1/chat/completions", "model": "m",
        "max_new_tokens": 96, "temperature": 0.0, "top_logprobs": 7, "grounding": "qwen2",
    }  # fmt: skip
    assert other.describe() == client.describe()
    assert client.grounding == "qwen2"


@pytest.mark.parametrize("grounding", ["auto", "Qwen2", "llava"])
def test_grounding_must_be_a_known_syntax(grounding):
    with pytest.raises(InputError, match="grounding must be one of qwen, qwen2, plain"):
        OpenAIVLM("http://127.0.0.1:9/v1", grounding=grounding)


def test_an_empty_batch_sends_nothing(clients):
    with ChatServer(lambda body: "x") as server:
        client, _ = clients(server.url)
        assert client.generate([], seed=0) == [] and client.yes_probability([]) == []
    assert server.requests == []


def test_an_image_asked_about_twice_in_a_batch_is_encoded_once(clients, monkeypatch):
    import clis.vlm.openai_vlm as openai_vlm

    encoded = []

    def counting_png_bytes(image):
        encoded.append(image)
        return png_bytes(image)

    monkeypatch.setattr(openai_vlm, "png_bytes", counting_png_bytes)
    shared, other = noise_image(1), noise_image(2)
    batch = [VLMRequest(shared, "a"), VLMRequest(shared, "b"), VLMRequest(other, "c"), VLMRequest(shared, "d")]
    with ChatServer(lambda body: logprobs_reply([("Yes", -0.5), ("No", -1.0)])) as server:
        client, _ = clients(server.url, concurrency=4)
        client.yes_probability(batch)
        client.yes_probability(batch[:1])
    assert sorted(map(id, encoded)) == sorted([id(shared), id(other), id(shared)])  # once per image per batch
    urls = {prompt_of(r["body"]): r["body"]["messages"][0]["content"][0]["image_url"]["url"] for r in server.requests}
    assert urls["a"] == urls["b"] == urls["d"] != urls["c"]
