"""Tiny randomly initialised diffusion pipelines, built offline, for tests and demos.

No GLIGEN or Stable Diffusion weights can be downloaded on CI machines, yet the adapters must
run the real diffusers pipelines. These builders assemble the same pipeline classes from tiny
random components (a 2-block UNet, a 2-block VAE, a 2-layer CLIP text model and a
character-level CLIP tokenizer) and save them with ``save_pretrained``, so the adapters load
them exactly as they would load a hub checkpoint. Images they make are noise, not pictures.

Example:
    >>> import tempfile
    >>> from generators.testing import build_tiny_gligen
    >>> path = build_tiny_gligen(tempfile.mkdtemp())   # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Latents are 1/2 of the image side with a 2-block VAE; 64x64 images use 32x32 latents.
TINY_IMAGE_SIZE = 64
_TEXT_DIM = 32
_MAX_TOKENS = 77  # as in CLIP, so test captions are not truncated


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level BPE maps every byte to a printable character; a tokenizer whose
    # vocabulary holds all of them (and no merges) spells any text letter by letter.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _write_char_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    symbols = sorted(set(_bytes_to_unicode().values()))
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.model_max_length = _MAX_TOKENS
    return tokenizer


def _tiny_components(root: Path, gated: bool) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = _write_char_tokenizer(root / "_tokenizer")
    unet = UNet2DConditionModel(
        sample_size=TINY_IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=_TEXT_DIM,
        # "gated" adds GLIGEN's gated self-attention and its box/phrase projection.
        attention_type="gated" if gated else "default",
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=_TEXT_DIM,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=_MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return dict(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_gligen(root: str | Path) -> str:
    """Save a tiny random ``StableDiffusionGLIGENPipeline`` under ``root`` and return its path."""
    from diffusers import StableDiffusionGLIGENPipeline

    path = Path(root) / "tiny-gligen"
    if not (path / "model_index.json").exists():
        StableDiffusionGLIGENPipeline(**_tiny_components(Path(root), gated=True)).save_pretrained(path)
    return str(path)


def build_tiny_sd(root: str | Path) -> str:
    """Save a tiny random text-only ``StableDiffusionPipeline`` under ``root`` and return its path."""
    from diffusers import StableDiffusionPipeline

    path = Path(root) / "tiny-sd"
    if not (path / "model_index.json").exists():
        StableDiffusionPipeline(**_tiny_components(Path(root), gated=False)).save_pretrained(path)
    return str(path)
