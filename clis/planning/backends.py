"""Chat backends for the planner: a local transformers model, or an OpenAI-compatible server.

Both take OpenAI-style ``messages`` and a seed and return the answer text. The local backend
samples with a seeded torch generator so a plan is reproducible; servers get the seed in the
request (vLLM, llama.cpp and ollama honour it).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Protocol, TypeVar

from clis import jsonio
from clis.errors import InputError, ModelUnavailableError

API_KEY_ENV = "CLIS_LLM_API_KEY"
T = TypeVar("T")


class BackendError(RuntimeError):
    """One request failed (bad status, unreadable reply, dropped connection); the planner retries it."""


# Connection failures after the server was reached. A refused connection, an unknown host or
# a connect timeout stays a ModelUnavailableError: no retry will fix a wrong or dead URL.
_DROPPED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.HTTPException)


class ChatBackend(Protocol):
    def chat(self, messages: list[dict[str, str]], seed: int) -> str: ...

    def describe(self) -> dict[str, Any]: ...


class TransformersChatBackend:
    """A causal LM loaded with :func:`clis.models.load_model` (``embedded:smollm2``, ``hf:...``, a folder)."""

    def __init__(self, spec: str, device: str = "cpu", max_new_tokens: int = 384, temperature: float = 0.7):
        from clis.models import load_model

        self.loaded = load_model(spec, "causal-lm", device=device)
        self.tokenizer = self.loaded.processor
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature

    def prompt_text(self, messages: list[dict[str, str]], answer_start: str = "") -> str:
        """The conversation as the model reads it, up to its answer, begun with ``answer_start``."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + answer_start
        # Base models without a chat template get the conversation as plain text.
        text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\n\nAssistant:"
        return text + (" " + answer_start if answer_start else "")

    def _encode(self, messages: list[dict[str, str]]):
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )
        return self.tokenizer(self.prompt_text(messages), return_tensors="pt")

    def chat(self, messages: list[dict[str, str]], seed: int) -> str:
        import torch

        inputs = {k: v.to(self.loaded.device) for k, v in self._encode(messages).items()}
        torch.manual_seed(seed)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            output = self.loaded.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                top_p=0.95 if self.temperature > 0 else None,
                pad_token_id=pad,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "transformers",
            **self.loaded.fingerprint,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }


def retry_dropped(call: Callable[[], T], retries: int, backoff: float, sleep: Callable[[float], None] = time.sleep,
                  stop: Callable[[], bool] = lambda: False) -> T:
    """``call()``, tried again up to ``retries`` times after a BackendError, waiting ``backoff * 2**attempt``
    seconds before each new try; the last BackendError is raised, and at once when ``stop()`` says so.

    >>> tries = []
    >>> def flaky():
    ...     tries.append(1)
    ...     if len(tries) < 3:
    ...         raise BackendError("connection dropped")
    ...     return "answer"
    >>> waits = []
    >>> retry_dropped(flaky, retries=3, backoff=0.5, sleep=waits.append), waits
    ('answer', [0.5, 1.0])
    """
    for attempt in range(retries + 1):
        try:
            return call()
        except BackendError:
            if attempt == retries or stop():
                raise
            sleep(backoff * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def chat_completions_url(url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000/v1/chat/completions`` (a full URL is kept).

    >>> chat_completions_url("http://localhost:8000"), chat_completions_url("http://h/v1/chat/completions")
    ('http://localhost:8000/v1/chat/completions', 'http://h/v1/chat/completions')
    """
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


def post_chat(url: str, body: dict[str, Any], timeout: float) -> Any:
    """POST ``body`` to the chat-completions endpoint ``url``; return the parsed JSON reply.

    The one HTTP client of clis for OpenAI-compatible servers (the planner and the VLM judges
    share it, so both classify failures alike). The reply is returned as parsed, whatever its
    shape: each caller names the field it needed when it is missing. Raises:

    * :class:`InputError` for HTTP 401, 403 and 404 (wrong URL, model or key);
    * :class:`ModelUnavailableError` when the server cannot be reached at all;
    * :class:`BackendError` for what may pass on a retry: another HTTP error status, a
      connection dropped after the server was reached, a reply that is not strict JSON.

    The API key, if the server wants one, is read from ``CLIS_LLM_API_KEY``.
    """
    headers = {"Content-Type": "application/json"}
    if os.environ.get(API_KEY_ENV):
        headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
    request = urllib.request.Request(url, data=jsonio.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return jsonio.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip().splitlines()
        if exc.code in (401, 403, 404):
            # Wrong URL, model or key: every later request would fail the same way.
            raise InputError(f"{url}: HTTP {exc.code}: {detail[0] if detail else exc.reason}") from None
        raise BackendError(f"HTTP {exc.code} from {url}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, _DROPPED):
            # Reached, then reset while sending the request: worth another try.
            raise BackendError(f"{url}: connection dropped: {exc.reason}") from None
        raise ModelUnavailableError(f"{url}: cannot reach the chat endpoint: {exc.reason}") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        # A server that closes the connection mid-reply (restart, OOM, proxy timeout) fails
        # this request only; the caller retries it and, if it keeps failing, records it.
        raise BackendError(f"{url}: connection dropped: {type(exc).__name__}: {exc}") from None
    except (json.JSONDecodeError, jsonio.JSONError, UnicodeDecodeError) as exc:
        raise BackendError(f"unreadable reply from {url}: {' '.join(str(exc).split())}") from None


def first_choice(reply: Any, url: str) -> dict[str, Any]:
    """``choices[0]`` of a chat-completions reply; a reply without one is a BackendError."""
    try:
        choice = reply["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"reply from {url} has no choices[0]") from None
    if not isinstance(choice, dict):
        raise BackendError(f"reply from {url} has a choices[0] that is not an object")
    return choice


def chat_content(reply: Any, url: str) -> str:
    """``choices[0].message.content`` of a chat-completions reply ('' when null): the answer
    text of clis plan's backend and of the served VLM alike."""
    try:
        content = first_choice(reply, url)["message"]["content"]
    except (KeyError, TypeError):
        raise BackendError(f"reply from {url} has no choices[0].message.content") from None
    if content is not None and not isinstance(content, str):
        raise BackendError(f"reply from {url} has a choices[0].message.content that is not text")
    return content or ""


class OpenAIChatBackend:
    """Any server speaking the OpenAI chat-completions protocol (vLLM, llama.cpp, ollama, ...).

    The API key, if the server wants one, is read from ``CLIS_LLM_API_KEY``.
    """

    def __init__(
        self, url: str, model: str | None = None, max_new_tokens: int = 384, temperature: float = 0.7, timeout: float = 120.0
    ):
        self.url = chat_completions_url(url)
        self.model = model or "default"
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.timeout = timeout

    def chat(self, messages: list[dict[str, str]], seed: int) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_new_tokens,
            "seed": seed,
        }
        return chat_content(post_chat(self.url, body, self.timeout), self.url)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "openai-compatible",
            "url": self.url,
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }


# Local models up to this many parameters get the guided mode by default: SmolLM2-135M could
# not write a usable JSON scene graph in 0 of 5 concept sets (docs/pipeline.md).
GUIDED_MAX_PARAMETERS = 1_000_000_000
MODES = ("auto", "guided", "json")


def make_backend(spec: str, model: str | None = None, mode: str = "auto", **options: Any):
    """``http(s)://...`` -> :class:`OpenAIChatBackend`; anything else is a model spec for transformers.

    ``mode``: ``json`` asks for whole JSON answers; ``guided`` wraps a local model in
    :class:`clis.planning.guided.GuidedPlanner`; ``auto`` picks guided for ``embedded:`` models
    and local models under :data:`GUIDED_MAX_PARAMETERS`, json otherwise.
    """
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    temperature = options.get("temperature", 0.0)
    # nan would silently mean greedy (nan > 0 is False), inf a uniform guess at every token.
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise InputError(f"--temperature must be a finite number >= 0, got {temperature}")
    if spec.startswith(("http://", "https://")):
        if mode == "guided":
            raise InputError("--mode guided needs a local model (it scores options with the model's log-likelihoods); "
                             "an http(s) endpoint supports --mode json")
        return OpenAIChatBackend(spec, model=model, **options)
    if model is not None:
        raise InputError("--llm-model names the model on a server; give it with an http(s):// --llm URL")
    backend = TransformersChatBackend(spec, **options)
    if mode == "auto":
        size = sum(p.numel() for p in backend.loaded.model.parameters())
        mode = "guided" if spec.startswith("embedded:") or size <= GUIDED_MAX_PARAMETERS else "json"
    if mode == "guided":
        from clis.planning.guided import GuidedPlanner

        return GuidedPlanner(backend, temperature=backend.temperature)
    return backend
