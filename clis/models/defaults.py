"""Default model specs: plain constants, no torch.

Kept apart from :mod:`clis.models.registry` so that ``clis --help`` (whose option defaults
show these specs) does not have to import torch.
"""

DEFAULT_CLIP = "hf:openai/clip-vit-base-patch32"
DEFAULT_DETECTOR = "hf:IDEA-Research/grounding-dino-tiny"
OWLV2_DETECTOR = "hf:google/owlv2-base-patch16-ensemble"
DEFAULT_LLM = "embedded:smollm2"
DEFAULT_TEXT_EMBEDDER = "embedded:minilm"
DEFAULT_SAM = "hf:facebook/sam-vit-base"
# The diffusion pipelines of `clis generate --generator gligen|sd` (hub ids as specs; the
# generators take the id without "hf:").
DEFAULT_GLIGEN = "hf:masterful/gligen-1-4-generation-text-box"
DEFAULT_SD = "hf:CompVis/stable-diffusion-v1-4"
# The VLM of `clis score --judge vqa|acp` (Qwen2-VL reads boxes as <|box_start|>(x0,y0),(x1,y1)<|box_end|>
# on a 0..1000 grid) and the acp judge's rater.
DEFAULT_VLM = "hf:Qwen/Qwen2-VL-2B-Instruct"
DEFAULT_RATER = "embedded:smollm2"
