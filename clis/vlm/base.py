"""What every vision-language model client of CLIS offers, whatever runs the model.

A client answers a batch of :class:`VLMRequest` (one image and one user prompt each) in two
ways:

* :meth:`VLMClient.generate`: free text, for the ``acp`` judge's descriptions;
* :meth:`VLMClient.yes_probability`: P("Yes") of the first answer token, normalised over
  Yes and No, for the ``vqa`` judge. No text is generated.

Both return one item per request, in order. An item that failed after the client's own
retries is a :class:`RequestFailed` in place of its answer, so one bad request never costs
the rest of the batch; errors that every later request would hit too (a wrong URL, a missing
model) are raised instead.

Boxes are named in the model's own grounding syntax by :func:`box_text`.

Example:
    >>> box_text([0.1, 0.2, 0.3, 0.4], "qwen")
    '<box>(100,200),(400,600)</box>'
    >>> box_text([0.1, 0.2, 0.3, 0.4], "qwen2")
    '<|box_start|>(100,200),(400,600)<|box_end|>'
    >>> grounding_syntax("qwen2_vl"), grounding_syntax("llava")
    ('qwen2', 'plain')
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, Union

from PIL import Image

# Box syntaxes (see box_text). "auto" picks one from the model type (grounding_syntax).
GROUNDING_SYNTAXES = ("qwen", "qwen2", "plain")
# Grounding coordinates are integers on this grid, as Qwen-VL and Qwen2-VL were trained with.
GRID = 1000
# Model types whose pretraining taught them a box syntax; everything else gets "plain".
_SYNTAX_BY_MODEL_TYPE = {"qwen": "qwen", "qwen_vl": "qwen", "qwen2_vl": "qwen2"}


@dataclass(frozen=True)
class VLMRequest:
    """One question to a VLM: an RGB image and the user's prompt text."""

    image: Image.Image
    prompt: str


@dataclass
class RequestFailed:
    """The answer of a request that failed after every retry; ``reason`` is one line."""

    reason: str

    def __bool__(self) -> bool:  # so `if answer:` reads as "got an answer"
        return False


def failure_reason(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``: why a request failed, as its RequestFailed says.

    >>> failure_reason(RuntimeError("CUDA out of memory")), failure_reason(KeyError())
    ('RuntimeError: CUDA out of memory', 'KeyError')
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


Answer = Union[str, RequestFailed]
Probability = Union[float, RequestFailed]


class VLMClient(Protocol):
    """See the module docstring."""

    # The box syntax this model understands (one of GROUNDING_SYNTAXES).
    grounding: str

    def generate(self, requests: Sequence[VLMRequest], seed: int) -> list[Answer]: ...

    def yes_probability(self, requests: Sequence[VLMRequest]) -> list[Probability]: ...

    def describe(self) -> dict[str, Any]:
        """Model identity (fingerprint or server URL and model name) and decoding settings,
        as JSON-ready data: it goes into the manifest and keys the answer cache."""
        ...

    def close(self) -> None: ...


def grid_corners(bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """Normalised ``[x, y, w, h]`` -> ``(x0, y0, x1, y1)`` on the 0..1000 grid, clipped to it.

    >>> grid_corners([0.25, 0.5, 0.5, 0.5])
    (250, 500, 750, 1000)
    """
    x, y, w, h = (float(v) for v in bbox)

    def snap(value: float) -> int:
        return min(GRID, max(0, round(value * GRID)))

    return snap(x), snap(y), snap(x + w), snap(y + h)


def box_text(bbox: Sequence[float], syntax: str) -> str:
    """The box ``bbox`` (normalised ``xywh``) written the way a model of ``syntax`` reads boxes."""
    x0, y0, x1, y1 = grid_corners(bbox)
    if syntax == "qwen":
        return f"<box>({x0},{y0}),({x1},{y1})</box>"
    if syntax == "qwen2":
        return f"<|box_start|>({x0},{y0}),({x1},{y1})<|box_end|>"
    if syntax == "plain":
        return (f"[{x0}, {y0}, {x1}, {y1}] (the box's left, top, right and bottom edges, on a 0 to {GRID} "
                "scale from the top-left corner)")
    raise ValueError(f"unknown grounding syntax {syntax!r}; expected one of {', '.join(GROUNDING_SYNTAXES)}")


def grounding_syntax(model_type: str | None) -> str:
    """The box syntax of a transformers ``model_type`` ("plain" for models taught none)."""
    return _SYNTAX_BY_MODEL_TYPE.get((model_type or "").lower(), "plain")


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG: lossless, so a server sees exactly the pixels a local model would."""
    buffer = io.BytesIO()
    # Level 1: still lossless, and encoding holds the GIL, so it bounds a served judge's request rate.
    image.convert("RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_digest(image: Image.Image) -> str:
    """sha256 of the RGB pixels and size: the same picture gives the same digest however it was stored."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()
