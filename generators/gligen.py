"""GLIGEN through diffusers' ``StableDiffusionGLIGENPipeline`` (box + phrase grounding).

The caption is the prompt; every object contributes one grounding phrase (its description,
else its attributes and label: :attr:`clis.layout.LayoutObject.phrase`) and one box, converted
from the layout's normalised ``[x, y, w, h]`` to the ``[x0, y0, x1, y1]`` GLIGEN expects.
"""

from __future__ import annotations

from typing import Any

from clis.errors import InputError
from clis.layout import Layout
from clis.models.defaults import DEFAULT_GLIGEN

from generators.base import DEFAULT_SIZE, GenerationError
from generators.diffusion import DiffusersGenerator

DEFAULT_GLIGEN_MODEL = DEFAULT_GLIGEN.removeprefix("hf:")  # listed by `clis models list`
# GLIGEN's position net holds at most this many grounding tokens; diffusers drops the rest.
GLIGEN_MAX_OBJECTS = 30


def gligen_boxes(layout: Layout) -> tuple[list[str], list[list[float]]]:
    """Phrases and normalised ``xyxy`` boxes of a layout, in object order.

    >>> from clis.layout import Layout
    >>> layout = Layout.model_validate({"id": "t", "caption": "a red cup", "objects": [
    ...     {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.25, 0.5, 0.5, 0.25]}]})
    >>> gligen_boxes(layout)
    (['red cup'], [[0.25, 0.5, 0.75, 0.75]])
    """
    return [o.phrase for o in layout.objects], [[float(v) for v in o.xyxy] for o in layout.objects]


class GligenGenerator(DiffusersGenerator):
    """Layout-to-image with GLIGEN (Li et al., 2023), the ACP paper's baseline generator."""

    name = "gligen"
    pipeline_class_name = "StableDiffusionGLIGENPipeline"
    default_model = DEFAULT_GLIGEN_MODEL

    def __init__(
        self,
        model: str | None = None,
        steps: int = 50,
        guidance: float = 7.5,
        scheduled_sampling_beta: float = 0.3,
        negative_prompt: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
    ):
        if not 0.0 <= scheduled_sampling_beta <= 1.0:
            raise InputError(f"--scheduled-sampling-beta must be in [0, 1], got {scheduled_sampling_beta}")
        # Fraction of the denoising steps that use the boxes (GLIGEN's scheduled sampling).
        self.scheduled_sampling_beta = float(scheduled_sampling_beta)
        super().__init__(model, steps, guidance, negative_prompt, device, dtype, width, height)

    def pipeline_inputs(self, layout: Layout) -> dict[str, Any]:
        if len(layout.objects) > GLIGEN_MAX_OBJECTS:
            raise GenerationError(
                f"layout {layout.id!r} has {len(layout.objects)} objects; GLIGEN grounds at most {GLIGEN_MAX_OBJECTS}"
            )
        phrases, boxes = gligen_boxes(layout)
        return {
            "prompt": layout.caption or ", ".join(phrases),
            "gligen_phrases": phrases,
            "gligen_boxes": boxes,
            "gligen_scheduled_sampling_beta": self.scheduled_sampling_beta,
        }

    def config(self) -> dict[str, Any]:
        return {**super().config(), "scheduled_sampling_beta": self.scheduled_sampling_beta}
