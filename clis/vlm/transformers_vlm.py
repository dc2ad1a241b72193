"""A vision-language model run in this process with transformers, as a :class:`~clis.vlm.base.VLMClient`.

Covers any model that ``transformers.AutoModelForImageTextToText`` loads and whose processor
has a chat template: LLaVA / LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, SmolVLM / Idefics3, and the
other families in transformers' image-text-to-text mapping. The test suite exercises a tiny
random LLaVA (:func:`clis.testing.build_tiny_llava`) and a tiny random Qwen2-VL
(:func:`clis.testing.build_tiny_qwen2_vl`); other families are expected to work through the
same Auto classes but are not tested here.

Each request is one user turn holding the image, then the prompt, rendered with the
processor's own chat template. Requests are padded on the left, so every prompt ends at the
last position: the next-token logits there are the first answer token's, and new tokens
start at the same column for the whole batch.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from clis.testing import build_tiny_llava
    >>> from clis.vlm.base import VLMRequest
    >>> vlm = TransformersVLM(build_tiny_llava(tempfile.mkdtemp()), max_new_tokens=4)
    >>> request = VLMRequest(Image.new("RGB", (48, 32), (200, 30, 30)), "Is there a red cup?")
    >>> [p] = vlm.yes_probability([request])
    >>> 0.0 < p < 1.0
    True
    >>> [answer] = vlm.generate([request], seed=0)
    >>> isinstance(answer, str), vlm.grounding
    (True, 'plain')
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Callable, Sequence

import torch

from clis.errors import ModelSpecError
from clis.vlm.base import Answer, Probability, RequestFailed, VLMRequest, failure_reason, grounding_syntax

# Spellings of the two answers whose first token opens a yes/no reply, with and without the
# space some chat templates leave before the answer.
_YES_WORDS = ("Yes", "yes", " Yes", " yes")
_NO_WORDS = ("No", "no", " No", " no")


def _first_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if encoded:
            ids.append(int(encoded[0]))
    return list(dict.fromkeys(ids))


class TransformersVLM:
    """A local image-text-to-text model (see the module docstring).

    Args:
        spec: a model spec for :func:`clis.models.load_model` (``hf:org/name``, a folder, ...).
        device, dtype: where and in which precision the weights live.
        max_new_tokens: the longest answer :meth:`generate` writes.
        temperature: 0 decodes greedily; above 0 samples from the softmax of the logits divided
            by it, over the whole vocabulary (no top-k / top-p cut-off).
        batch_size: requests per forward pass.
    """

    def __init__(self, spec: str, device: str = "cpu", dtype: Any = None, max_new_tokens: int = 96,
                 temperature: float = 0.0, batch_size: int = 8):
        from clis.models import load_model

        if max_new_tokens < 1 or batch_size < 1 or temperature < 0:
            raise ValueError("max_new_tokens and batch_size must be at least 1 and temperature at least 0")
        self.loaded = load_model(spec, "vlm", device=device, dtype=dtype)
        self.model = self.loaded.model
        self.processor = self.loaded.processor
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self.model_type = self.model.config.model_type
        self.grounding = grounding_syntax(self.model_type)

        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None or not getattr(self.processor, "chat_template", None):
            raise ModelSpecError(f"model {spec}: its processor has no tokenizer and chat template to prompt it with")
        # __init__ refuses a processor without a chat template, so there is always one to hash.
        self._template_sha256 = hashlib.sha256(str(self.processor.chat_template).encode("utf-8")).hexdigest()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:  # Llama-style tokenizers ship without one
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._pad_id = self.tokenizer.pad_token_id

        yes, no = _first_token_ids(self.tokenizer, _YES_WORDS), _first_token_ids(self.tokenizer, _NO_WORDS)
        # A token that starts both answers (a bare space, say) says nothing about which one follows.
        shared = set(yes) & set(no)
        self.yes_ids = [i for i in yes if i not in shared]
        self.no_ids = [i for i in no if i not in shared]
        if not self.yes_ids or not self.no_ids:
            # Real VLM vocabularies all have "Yes" and "No" tokens; only a broken tokenizer lands here.
            raise ModelSpecError(f"model {spec}: its tokenizer has no token that starts 'Yes' or 'No' on its own")
        # Only the last position's logits are needed; asking for all of them costs
        # sequence x vocabulary floats per request (gigabytes for real vocabularies).
        self._logits_kwargs = (
            {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        )

    # -- prompting -------------------------------------------------------------------------

    def _prompt_text(self, prompt: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    def _inputs(self, requests: Sequence[VLMRequest]):
        texts = [self._prompt_text(request.prompt) for request in requests]
        # One list of images per prompt: Idefics3 / SmolVLM require it, LLaVA and Qwen2-VL
        # flatten it.
        images = [[request.image.convert("RGB")] for request in requests]
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        # Pixels follow the weights' dtype; ids and masks stay integers.
        return {
            key: value.to(self.loaded.device, self.loaded.dtype if value.is_floating_point() else value.dtype)
            if isinstance(value, torch.Tensor) else value
            for key, value in inputs.items()
        }

    def _each_batch(self, requests: Sequence[VLMRequest], run: Callable[[Sequence[VLMRequest]], list]) -> list:
        """``run`` over batches; a batch that raises is retried one request at a time."""
        results: list = []
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start:start + self.batch_size])
            try:
                results.extend(run(batch))
                continue
            except Exception as exc:  # noqa: BLE001 - any failure is retried request by request
                if len(batch) == 1:
                    results.append(RequestFailed(failure_reason(exc)))
                    continue
            for request in batch:
                try:
                    results.extend(run([request]))
                except Exception as exc:  # noqa: BLE001 - this request alone fails; the rest go on
                    results.append(RequestFailed(failure_reason(exc)))
        return results

    # -- VLMClient -------------------------------------------------------------------------

    def generate(self, requests: Sequence[VLMRequest], seed: int) -> list[Answer]:
        def run(batch: Sequence[VLMRequest]) -> list[str]:
            inputs = self._inputs(batch)
            sampling: dict[str, Any] = (
                {"do_sample": True, "temperature": self.temperature, "top_k": 0, "top_p": 1.0}
                if self.temperature > 0 else {"do_sample": False}
            )
            torch.manual_seed(seed)
            with torch.inference_mode():
                output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, pad_token_id=self._pad_id,
                                             **sampling)
            # Left padding puts every prompt's end at the same column.
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

        return self._each_batch(requests, run)

    def yes_probability(self, requests: Sequence[VLMRequest]) -> list[Probability]:
        yes_ids = torch.tensor(self.yes_ids, device=self.loaded.device)
        no_ids = torch.tensor(self.no_ids, device=self.loaded.device)

        def run(batch: Sequence[VLMRequest]) -> list[float]:
            inputs = self._inputs(batch)
            with torch.inference_mode():
                logits = self.model(**inputs, **self._logits_kwargs).logits[:, -1, :].float()
            yes = torch.logsumexp(logits[:, yes_ids], dim=-1)
            no = torch.logsumexp(logits[:, no_ids], dim=-1)
            # exp(yes) / (exp(yes) + exp(no)), without overflowing either exponential
            return torch.sigmoid(yes - no).tolist()

        return self._each_batch(requests, run)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "transformers",
            **self.loaded.fingerprint,
            "model_type": self.model_type,
            # Answers differ by precision (bf16 against fp32) and by the prompt the template builds.
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "chat_template_sha256": self._template_sha256,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "yes_tokens": [self.tokenizer.decode([i]) for i in self.yes_ids],
            "no_tokens": [self.tokenizer.decode([i]) for i in self.no_ids],
        }

    def close(self) -> None:
        """Nothing to release beyond what garbage collection frees."""

