"""Shared loading and seeding for the adapters built on diffusers pipelines (gligen, sd)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image

from clis.errors import InputError, ModelUnavailableError
from clis.layout import Layout

from generators.base import DEFAULT_SIZE, GeneratorAdapter, check_finite

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _reason(exc: BaseException) -> str:
    """The first line of an error, without sentences that point at a traceback nobody is shown."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    sentences = re.split(r"(?<=[.!?])\s+", text)
    kept = [s for s in sentences if not re.search(r"stack ?trace|traceback", s, re.IGNORECASE)]
    return " ".join(kept).rstrip(". ") or type(exc).__name__


def pipeline_unavailable_message(generator: str, model: str, exc: BaseException) -> str:
    """One line for a diffusers pipeline that cannot be loaded: what to fetch, or what to pass."""
    from clis.models.cache import is_offline
    from clis.models.hub import not_cached_message

    folder = Path(model).expanduser()
    if folder.exists() or model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1:
        what = "a diffusers pipeline folder (model_index.json, unet/, vae/, ...)"
        if not folder.exists():
            return f"generator {generator!r}: --model {model}: no such folder; pass --model with {what} or a hub id"
        return f"generator {generator!r}: cannot load --model {model}: {_reason(exc)}; pass --model with {what}"
    why = "it is not in the local cache and HF_HUB_OFFLINE is set" if is_offline() else f"loading failed ({_reason(exc)})"
    return f"generator {generator!r}: " + not_cached_message(f"hf:{model}", why) + " (--model DIR)"


class DiffusersGenerator(GeneratorAdapter):
    """A diffusers text-to-image pipeline run once per seed.

    Each image is made with its own CPU ``torch.Generator`` seeded with the candidate's seed,
    so candidate k is the same image whether it is made alone, in a resumed run, or on another
    device type (the initial noise is drawn on the CPU and then moved).
    """

    pipeline_class_name: ClassVar[str] = ""
    default_model: ClassVar[str] = ""

    def __init__(
        self,
        model: str | None = None,
        steps: int = 50,
        guidance: float = 7.5,
        negative_prompt: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
    ):
        super().__init__(width, height)
        if width % 8 or height % 8:
            raise InputError(f"--width and --height must be multiples of 8 for diffusion models, got {width}x{height}")
        if steps < 1:
            raise InputError(f"--steps must be >= 1, got {steps}")
        check_finite("--guidance", guidance)
        self.model = model or self.default_model
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.negative_prompt = negative_prompt
        self.device = resolve_device(device)
        if dtype is not None and dtype not in _DTYPES:
            raise InputError(f"unknown --dtype {dtype!r} (use one of: {', '.join(sorted(_DTYPES))})")
        self.dtype = _DTYPES[dtype] if dtype else ("float16" if self.device.startswith("cuda") else "float32")
        self.pipeline = self._load()

    def _load(self):
        import torch

        try:
            import diffusers
        except ImportError as exc:
            # diffusers is an optional extra: shapes and copy-paste run without it.
            problem = "is not installed" if exc.name == "diffusers" else f"cannot be imported ({exc})"
            raise InputError(
                f"generator {self.name!r} needs diffusers, which {problem}: pip install \"clis[diffusion]\""
            ) from None

        pipeline_class = getattr(diffusers, self.pipeline_class_name)
        # Loading bars and deprecation chatter would bury our own progress bar.
        verbosity = diffusers.utils.logging.get_verbosity()
        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        try:
            pipeline = pipeline_class.from_pretrained(
                self.model,
                dtype=getattr(torch, self.dtype),
                # Candidates are filtered by CLIS later; a safety checker that blacks out whole
                # images would silently poison the candidate pool instead.
                safety_checker=None,
                requires_safety_checker=False,
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(pipeline_unavailable_message(self.name, self.model, exc)) from None
        finally:
            diffusers.utils.logging.set_verbosity(verbosity)
            diffusers.utils.logging.enable_progress_bar()
        pipeline.set_progress_bar_config(disable=True)
        return pipeline.to(self.device)

    def pipeline_inputs(self, layout: Layout) -> dict[str, Any]:
        """The layout-specific keyword arguments of the pipeline call."""
        return {"prompt": layout.caption}

    def generate(self, layout: Layout, seeds: Sequence[int]) -> list[Image.Image]:
        import torch

        inputs = self.pipeline_inputs(layout)
        images = []
        for seed in seeds:
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
            with torch.inference_mode():
                result = self.pipeline(
                    **inputs,
                    negative_prompt=self.negative_prompt,
                    height=self.height,
                    width=self.width,
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance,
                    generator=generator,
                    output_type="pil",
                )
            images.append(result.images[0].convert("RGB"))
        return images

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "model": self.model,
            "pipeline": self.pipeline_class_name,
            "steps": self.steps,
            "guidance": self.guidance,
            "negative_prompt": self.negative_prompt,
            "device": self.device,
            "dtype": self.dtype,
            "scheduler": type(self.pipeline.scheduler).__name__,
        }

    def close(self) -> None:
        self.pipeline = None
