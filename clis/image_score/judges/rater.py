"""The ``acp`` judge's rater: an LLM says how well a description agrees with the intended text.

The rater is any backend ``clis plan`` speaks (:func:`clis.planning.backends.make_backend`):
``embedded:smollm2``, ``hf:ORG/NAME``, a local folder, or an OpenAI-compatible server. It
answers in one of two ways:

* **json**: the model writes ``{"score": 0..5, "explanation": ...}``. An answer that does not
  parse, or a score outside 0..5, is asked again with a new seed; after ``attempts`` tries the
  rating fails (its candidate becomes an error record; ACP's own code turned the whole image
  into -1 instead, see ``docs/clis-i.md``).
* **guided** (local models): the answer is started for the model as ``{"score": `` and the
  score is the digit 0..5 with the highest next-token probability. A 135M model cannot write
  the JSON reliably, but it can always pick a digit; there is no explanation.

Example:
    >>> parse_rating('Sure! {"score": 4, "explanation": "the cup is red"}')
    (4.0, 'the cup is red')
    >>> parse_rating('{"score": 7}') is None, parse_rating("four") is None
    (True, True)
"""

from __future__ import annotations

import json
import time
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from clis import jsonio
from clis.errors import InputError, ModelSpecError, ModelUnavailableError
from clis.image_score.judges import prompts
from clis.image_score.judges.answers import AnswerCache, answer_key
from clis.planning.backends import (
    GUIDED_MAX_PARAMETERS,
    BackendError,
    TransformersChatBackend,
    make_backend,
    retry_dropped,
)
from clis.vlm.base import RequestFailed, failure_reason
from clis.vlm.pool import DaemonPool

MAX_SCORE = 5
_EXCERPT = 80
_DECODER = json.JSONDecoder()


@dataclass
class Rating:
    """One rating: ``score`` on 0..5, the rater's explanation (None when guided) and its raw answer."""

    score: float
    explanation: Optional[str]
    answer: str


def parse_rating(text: str) -> Optional[tuple[float, Optional[str]]]:
    """``(score, explanation)`` from the first JSON object in ``text`` with a 0..5 ``score``, else None."""
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict) and "score" in value:
            score = jsonio.finite_number(value["score"])
            if score is None or isinstance(value["score"], bool) or not 0 <= score <= MAX_SCORE:
                return None
            explanation = value.get("explanation")
            return float(score), explanation if isinstance(explanation, str) else None
        start = text.find("{", start + 1)
    return None


def rating_messages(intended: str, description: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": prompts.RATER_SYSTEM},
        {"role": "user", "content": prompts.fill(prompts.RATER_USER, intended=intended, description=description)},
    ]


class Rater:
    """Rates (intended text, description) pairs; see the module docstring.

    Args:
        spec: a model spec, or an ``http(s)://`` chat endpoint (with ``model`` naming the served model).
        mode: ``json``, ``guided`` (local models only) or ``auto`` (guided for local models up to
            1B parameters, json otherwise).
        attempts: tries of one rating, each with a new seed, before it fails.
        retries: further tries of a request whose connection dropped (servers), with backoff.
        cache: answers kept across runs (:class:`clis.image_score.judges.answers.AnswerCache`).
    """

    def __init__(self, spec: str, model: Optional[str] = None, mode: str = "auto", temperature: float = 0.0,
                 max_new_tokens: int = 128, device: str = "cpu", timeout: float = 120.0, concurrency: int = 4,
                 attempts: int = 2, retries: int = 3, backoff: float = 0.5, cache: Optional[AnswerCache] = None,
                 sleep: Callable[[float], None] = time.sleep):
        if model is not None and not spec.startswith(("http://", "https://")):
            raise InputError("--rater-model names the model on a server; give it with an http(s):// --rater URL")
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        if spec.startswith(("http://", "https://")):
            options["timeout"] = timeout
        else:
            options["device"] = device
        self.backend = make_backend(spec, model=model, mode="json", **options)
        local = isinstance(self.backend, TransformersChatBackend)
        if mode == "guided" and not local:
            raise ModelSpecError("--rater-mode guided needs a local rater model (it reads next-token probabilities); "
                                 "a served rater answers in json mode")
        if mode == "auto":
            small = local and (spec.startswith("embedded:") or
                               sum(p.numel() for p in self.backend.loaded.model.parameters()) <= GUIDED_MAX_PARAMETERS)
            mode = "guided" if small else "json"
        self.mode = mode
        self.attempts = max(1, attempts)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.sleep = sleep
        self.cache = cache
        self.hits = 0
        self.asked = 0
        self._pool = DaemonPool(concurrency, "clis-rater") if not local else None
        self._digits = self._digit_ids() if mode == "guided" else None
        self._identity = self.describe()

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "mode": self.mode}

    # -- guided -------------------------------------------------------------------------------

    def _digit_ids(self) -> list[int]:
        tokenizer = self.backend.tokenizer
        ids = [tokenizer.encode(str(d), add_special_tokens=False) for d in range(MAX_SCORE + 1)]
        if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
            raise ModelSpecError(f"rater {self.backend.loaded.spec}: its tokenizer does not spell each digit 0-5 as "
                                 "one token, so it cannot rate in guided mode; pass --rater-mode json")
        return [i[0] for i in ids]

    def _guided(self, messages: list[dict[str, str]]) -> Rating:
        import torch

        tokenizer, model = self.backend.tokenizer, self.backend.loaded.model
        text = self.backend.prompt_text(messages, prompts.RATER_GUIDED_PREFIX)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            logits = model(**{k: v.to(self.backend.loaded.device) for k, v in ids.items()}).logits[0, -1]
        digit_logits = logits[self._digits].float()
        score = int(torch.argmax(digit_logits))
        return Rating(float(score), None, f"{prompts.RATER_GUIDED_PREFIX}{score}")

    # -- json ---------------------------------------------------------------------------------

    def _json(self, messages: list[dict[str, str]], seed: int) -> Rating | RequestFailed:
        answers = []
        for attempt in range(self.attempts):
            try:
                # A dropped connection is tried again with backoff before the rating counts as failed.
                answer = retry_dropped(partial(self.backend.chat, messages, seed + attempt), self.retries,
                                       self.backoff, self.sleep)
            except BackendError as exc:
                return RequestFailed(f"rater request failed after {self.retries + 1} tries: {exc}")
            parsed = parse_rating(answer)
            if parsed is not None:
                return Rating(parsed[0], parsed[1], answer)
            answers.append(" ".join(answer.split())[:_EXCERPT])
        return RequestFailed(f"rater answer not a 0-5 JSON score after {self.attempts} tries with new seeds "
                             f"(last: {answers[-1]!r})")

    # -- both ---------------------------------------------------------------------------------

    def _one(self, messages: list[dict[str, str]], seed: int) -> Rating | RequestFailed:
        try:
            return self._guided(messages) if self.mode == "guided" else self._json(messages, seed)
        except (InputError, ModelUnavailableError):
            raise  # a wrong URL, key or model: every rating would fail the same way
        except Exception as exc:  # noqa: BLE001 -- out of memory, a prompt past the model's length: this rating fails
            return RequestFailed(f"rater failed: {failure_reason(exc)}"[:300])

    def rate_many(self, pairs: Sequence[tuple[str, str]], seed: int) -> list[Rating | RequestFailed]:
        """A rating per ``(intended text, description)``, in order; cached answers are not asked again."""
        conversations = [rating_messages(intended, description) for intended, description in pairs]
        used_seed = None if self.mode == "guided" else seed
        keys = [answer_key("rate", self._identity, None, m, used_seed) for m in conversations]
        known = self.cache.get_many(keys) if self.cache is not None else {}
        todo = [i for i, key in enumerate(keys) if key not in known]
        results: list[Any] = [None] * len(pairs)
        for i, key in enumerate(keys):
            if key in known:
                cached = known[key]
                results[i] = Rating(float(cached["score"]), cached.get("explanation"), cached.get("answer", ""))
        if self._pool is not None:
            fresh = self._pool.map(lambda i: self._one(conversations[i], seed), todo)
        else:
            fresh = [self._one(conversations[i], seed) for i in todo]
        stored = {}
        for i, result in zip(todo, fresh):
            results[i] = result
            if isinstance(result, Rating):
                stored[keys[i]] = {"score": result.score, "explanation": result.explanation, "answer": result.answer}
        if self.cache is not None:
            self.cache.put_many(stored)
        self.hits += len(keys) - len(todo)
        self.asked += len(todo)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def rating_score(rating: Rating) -> float:
    """A 0..5 rating on the 0..100 scale of every CLIS term (x 20, as in the paper)."""
    return rating.score * (100.0 / MAX_SCORE)


__all__ = ["MAX_SCORE", "Rater", "Rating", "parse_rating", "rating_messages", "rating_score"]
