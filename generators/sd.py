"""Text-only Stable Diffusion: the no-layout-control reference.

It sees only the caption, never the boxes, so how it scores under CLIS-I tells how much of a
layout generator's score is owed to layout control at all. The default is SD 1.4, the model
GLIGEN 1.4 was trained from, so the two differ only in the grounding.
"""

from __future__ import annotations

from typing import Any

from clis.layout import Layout
from clis.models.defaults import DEFAULT_SD

from generators.diffusion import DiffusersGenerator

DEFAULT_SD_MODEL = DEFAULT_SD.removeprefix("hf:")  # listed by `clis models list`


class StableDiffusionGenerator(DiffusersGenerator):
    name = "sd"
    pipeline_class_name = "StableDiffusionPipeline"
    default_model = DEFAULT_SD_MODEL

    def pipeline_inputs(self, layout: Layout) -> dict[str, Any]:
        # A caption-less layout still needs a prompt; the object phrases are the best stand-in.
        return {"prompt": layout.caption or ", ".join(o.phrase for o in layout.objects)}
