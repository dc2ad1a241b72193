"""A vision-language model behind an OpenAI-compatible server (vLLM, SGLang, TGI).

Every :class:`~clis.vlm.base.VLMRequest` becomes one chat-completions request holding one user
message: the image, as a lossless PNG in a ``data:`` URL, then the prompt text::

    {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
        {"type": "text", "text": "Is there a dog in the red box? Answer Yes or No."}]}

:meth:`OpenAIVLM.generate` asks for free text (``temperature``, ``max_tokens`` and the
caller's ``seed``) and returns ``choices[0].message.content``, stripped. Within a batch, an
image object asked about several times is encoded once.

:meth:`OpenAIVLM.yes_probability` generates no text: it asks for a single token with
``logprobs: true`` and ``top_logprobs: N`` and reads the N most likely first tokens from
``choices[0].logprobs.content[0].top_logprobs``. Tokenizers spell the answer several ways
(``"Yes"``, ``" Yes"``, ``"yes"``), so the probabilities of every token that reads "yes" once
stripped and lower-cased are added up, and likewise for "no"; the result is
``P = yes / (yes + no)``, the model's preference between the two answers whatever mass it puts
on other tokens. A spelling missing from the top N counts 0: its probability is below the
smallest one listed, so with N = 20 it moves P by little. When neither answer is listed the
request fails (a model that answers something else is not judging), and a server that sends no
logprobs at all is an :class:`~clis.errors.InputError`, since every request would fail alike.

Example (the normalisation alone; a server is needed for the rest)::

    >>> import math
    >>> top = [{"token": "Yes", "logprob": math.log(0.5)}, {"token": " yes", "logprob": math.log(0.1)},
    ...        {"token": "No", "logprob": math.log(0.2)}, {"token": "Maybe", "logprob": math.log(0.1)}]
    >>> round(yes_share(top, top_logprobs=20), 6)
    0.75
    >>> yes_share([{"token": "Maybe", "logprob": -0.1}], top_logprobs=20)
    RequestFailed(reason="no Yes or No among the top 20 first-token logprobs: 'Maybe'")

With a server (not run here)::

    vlm = OpenAIVLM("http://localhost:8000/v1", model="Qwen/Qwen2-VL-7B-Instruct", grounding="qwen2")
    try:
        [p] = vlm.yes_probability([VLMRequest(image, "Is there a cat? Answer Yes or No.")])
    finally:
        vlm.close()

Failures: a dropped connection, an HTTP error other than 401/403/404 (a 5xx, a 429) or an
unreadable reply is retried with exponential backoff and, once retries run out, becomes a
:class:`~clis.vlm.base.RequestFailed` for that request alone. A wrong URL, model or key
(HTTP 401/403/404) and a server that cannot be reached are raised, as no retry would help; the
HTTP side is :func:`clis.planning.backends.post_chat`, shared with the planner.
"""

from __future__ import annotations

import base64
import math
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any, Callable, Sequence

from PIL import Image

from clis.errors import InputError
from clis.planning.backends import (BackendError, chat_completions_url, chat_content, first_choice, post_chat,
                                    retry_dropped)
from clis.vlm.base import GROUNDING_SYNTAXES, Answer, Probability, RequestFailed, VLMRequest, png_bytes
from clis.vlm.pool import DaemonPool

# How one request is sent and its reply read: (request, data URL of an image) -> answer.
_Ask = Callable[[VLMRequest, Callable[[Image.Image], str]], Any]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _logsumexp(values: list[float]) -> float:
    # Summing exp() directly underflows to 0 for logprobs like vLLM's -9999 floor.
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def yes_share(top: Sequence[dict[str, Any]], top_logprobs: int) -> Probability:
    """P(Yes) normalised over Yes and No from a list of ``{"token", "logprob"}`` (see the module
    docstring); :class:`RequestFailed` when neither answer is among them. ``top_logprobs`` is
    the N that was asked for, named in the failure."""
    yes, no = [], []
    for entry in top:
        answer = entry["token"].strip().lower()
        if answer == "yes":
            yes.append(entry["logprob"])
        elif answer == "no":
            no.append(entry["logprob"])
    if not yes and not no:
        likeliest = sorted(top, key=lambda e: e["logprob"], reverse=True)[:3]
        listed = ", ".join(repr(e["token"]) for e in likeliest) or "none listed"
        return RequestFailed(f"no Yes or No among the top {top_logprobs} first-token logprobs: {listed}")
    if not no:
        return 1.0
    if not yes:
        return 0.0
    # yes / (yes + no) as a logistic of the log-ratio, which neither overflows nor divides 0 by 0.
    margin = _logsumexp(yes) - _logsumexp(no)
    if margin >= 0:
        return 1.0 / (1.0 + math.exp(-margin))
    odds = math.exp(margin)
    return odds / (1.0 + odds)


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _finite(name: str, value: Any, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise InputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


class _DataUrls:
    """The PNG data URLs of one batch's images, each image encoded once.

    The vqa judge asks several questions about one image, and PNG encoding holds the GIL
    (about 65 ms for a 512x512 photo with Pillow), so encoding it per question would make the
    client, not the server, the bottleneck. Keyed by object identity: the batch keeps its
    requests, hence the images, alive until it is done.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._urls: dict[int, tuple[Image.Image, Future]] = {}

    def __call__(self, image: Image.Image) -> str:
        with self._lock:
            entry = self._urls.get(id(image))
            encoder = entry is None
            if encoder:
                entry = self._urls[id(image)] = (image, Future())
        future = entry[1]
        if encoder:
            try:
                future.set_result("data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii"))
            except BaseException as exc:
                future.set_exception(exc)
                raise
        return future.result()


class OpenAIVLM:
    """:class:`~clis.vlm.base.VLMClient` for a model served over the OpenAI chat-completions
    protocol. See the module docstring for the requests it sends and how it reads replies.

    ``grounding`` is the box syntax of the served model (one of
    :data:`~clis.vlm.base.GROUNDING_SYNTAXES`): a server does not say which model family it
    runs, so the caller names it. At most ``concurrency`` requests are in flight at once; a
    request that fails in a way worth retrying is tried ``retries`` more times, after
    ``backoff * 2**attempt`` seconds (through ``sleep``, which tests replace).
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        max_new_tokens: int = 96,
        temperature: float = 0.0,
        concurrency: int = 4,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 120.0,
        grounding: str = "plain",
        top_logprobs: int = 20,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if grounding not in GROUNDING_SYNTAXES:
            raise InputError(
                f"grounding must be one of {', '.join(GROUNDING_SYNTAXES)} for a served model (a server does not "
                f"say which model family it runs), got {grounding!r}"
            )
        self.url = chat_completions_url(url)
        self.model = model or "default"
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens, 1)
        self.temperature = _finite("temperature", temperature)
        self.concurrency = _positive_int("concurrency", concurrency, 1)
        self.retries = _positive_int("retries", retries, 0)
        self.backoff = _finite("backoff", backoff)
        self.timeout = _finite("timeout", timeout, positive=True)
        self.top_logprobs = _positive_int("top_logprobs", top_logprobs, 1)
        self.grounding = grounding
        self._sleep = sleep
        self._pool = DaemonPool(self.concurrency, "clis-vlm")

    # -- VLMClient ---------------------------------------------------------------------------

    def generate(self, requests: Sequence[VLMRequest], seed: int) -> list[Answer]:
        def ask(request: VLMRequest, data_url: Callable[[Image.Image], str]) -> Answer:
            body = {
                "model": self.model,
                "messages": self._messages(request, data_url),
                "temperature": self.temperature,
                "max_tokens": self.max_new_tokens,
                "seed": seed,
            }
            return chat_content(post_chat(self.url, body, self.timeout), self.url).strip()

        return self._run(requests, ask)

    def yes_probability(self, requests: Sequence[VLMRequest]) -> list[Probability]:
        def ask(request: VLMRequest, data_url: Callable[[Image.Image], str]) -> Probability:
            body = {
                "model": self.model,
                "messages": self._messages(request, data_url),
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
            return yes_share(self._top_logprobs(post_chat(self.url, body, self.timeout)), self.top_logprobs)

        return self._run(requests, ask)

    def describe(self) -> dict[str, Any]:
        # Only what decides the answers: concurrency, retries and timeouts change none of them.
        return {
            "kind": "openai-compatible",
            "url": self.url,
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_logprobs": self.top_logprobs,
            "grounding": self.grounding,
        }

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> "OpenAIVLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests and replies ----------------------------------------------------------------

    @staticmethod
    def _messages(request: VLMRequest, data_url: Callable[[Image.Image], str]) -> list[dict[str, Any]]:
        return [{
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(request.image)}},
                {"type": "text", "text": request.prompt},
            ],
        }]  # fmt: skip

    def _top_logprobs(self, reply: Any) -> list[dict[str, Any]]:
        logprobs = first_choice(reply, self.url).get("logprobs")
        top = None
        if logprobs is not None:
            try:
                first = logprobs["content"][0]
            except (KeyError, IndexError, TypeError):
                raise BackendError(f"reply from {self.url} has no choices[0].logprobs.content[0]") from None
            if not isinstance(first, dict):
                raise BackendError(f"reply from {self.url} has a choices[0].logprobs.content[0] that is not an object")
            top = first.get("top_logprobs")
        if not top:
            # A server without (top_)logprobs support ignores those request fields instead of
            # refusing them: every request of the run would come back the same way.
            raise InputError(
                f"the server at {self.url} returned no logprobs; the vqa judge needs logprobs/top_logprobs "
                f"support (e.g. vLLM's --max-logprobs >= {self.top_logprobs})"
            )
        if not isinstance(top, list) or not all(
            isinstance(e, dict) and isinstance(e.get("token"), str) and isinstance(e.get("logprob"), (int, float))
            and not isinstance(e.get("logprob"), bool) and math.isfinite(e["logprob"])
            for e in top
        ):
            raise BackendError(f"reply from {self.url} has top_logprobs that are not a list of {{token, logprob}}")
        return top

    # -- concurrency and retries -------------------------------------------------------------

    def _run(self, requests: Sequence[VLMRequest], ask: _Ask) -> list[Any]:
        if not requests:
            return []
        abort = threading.Event()
        data_urls = _DataUrls()
        futures: list[Future] = [self._pool.submit(self._with_retries, ask, r, data_urls, abort) for r in requests]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                # Workers return RequestFailed for what a retry might fix, so anything raised
                # (InputError, ModelUnavailableError) would hit the rest of the batch too.
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise future.exception()
            return [future.result() for future in futures]
        finally:
            # On an error or Ctrl-C: queued requests never start, running ones stop retrying.
            abort.set()
            for future in futures:
                future.cancel()

    def _with_retries(self, ask: _Ask, request: VLMRequest, data_urls: _DataUrls, abort: threading.Event) -> Any:
        cancelled = RequestFailed("cancelled: another request of the batch failed")
        if abort.is_set():
            return cancelled
        try:
            # No further tries, nor backoff, for a batch already given up.
            return retry_dropped(lambda: ask(request, data_urls), self.retries, self.backoff, self._sleep,
                                 stop=abort.is_set)
        except BackendError as exc:
            if abort.is_set():
                return cancelled
            attempts = self.retries + 1
            return RequestFailed(f"{_one_line(str(exc))} (after {attempts} attempt{'s' if attempts > 1 else ''})")
