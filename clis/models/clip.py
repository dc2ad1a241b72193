"""One CLIP interface over transformers' ``CLIPModel`` and open_clip models.

Metrics only ever see :class:`ClipEncoder`: ``preprocess`` PIL images into a pixel tensor,
``encode_images`` / ``encode_texts`` into (unnormalised) embeddings. For the transformers
backend the outputs are exactly ``CLIPModel.get_image_features`` / ``get_text_features`` on
``CLIPProcessor`` inputs, which is what torchmetrics' ``CLIPScore`` computes with.

Long captions are truncated to the model's context length, like every CLIP tool does, but
never silently: ``encode_texts`` returns one ``truncated`` flag per text. The cut keeps the end
token (``[SOT] first tokens [EOT]``, as open_clip's tokenizer does), because CLIP pools the text
embedding there; torchmetrics' CLIPScore cuts the token ids instead and loses it, so the two
agree only on texts within the context (see ``docs/clis-i.md``).

Text batches run only as long as their longest text. open_clip's tokenizer pads every text to
the full context (77 tokens), and a 12-token phrase then costs as much as a 77-token one;
:func:`open_clip_text_features` cuts the batch after the last pooled (end) token instead. With
a causal mask, no token before the end token sees the padding after it, so the embeddings are
unchanged (``tests/test_clip_speed_paths.py`` checks it against the padded forward).
transformers' tokenizer already pads to the batch's longest text (``padding=True``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from PIL import Image

from clis.errors import ModelSpecError


def _text_tower(model):
    """open_clip's text tower: the model itself (``CLIP``) or ``model.text`` (``CustomTextCLIP``)."""
    tower = getattr(model, "text", None)
    return tower if tower is not None and hasattr(tower, "token_embedding") else model


def _pool_positions(tower, tokens: torch.Tensor) -> Optional[torch.Tensor]:
    """Per text, the position open_clip pools the embedding at, or None when a shorter batch
    could change the result (no causal mask, padding masks, class tokens, last-token pooling)."""
    if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
        return None
    if getattr(tower, "attn_mask", None) is None or not hasattr(tower, "positional_embedding"):
        return None
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
    if pool == "argmax":  # the end token has the highest id of the vocabulary
        return tokens.argmax(dim=-1)
    eos = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
    if pool == "eos" and eos is not None:
        return (tokens == eos).int().argmax(dim=-1)
    return None


def open_clip_text_features(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the tokens up to the batch's last end token.

    open_clip adds its full 77-row positional embedding and causal mask whatever the input
    length, so the shorter forward slices both; towers it cannot shorten exactly run the full
    ``encode_text``.

    Example:
        >>> import open_clip, torch
        >>> from clis.testing import OPEN_CLIP_TINY_CFG
        >>> model = open_clip.CLIP(**OPEN_CLIP_TINY_CFG).eval()
        >>> tokens = open_clip.get_tokenizer("ViT-B-32")(["a red cup", "a dog"])
        >>> with torch.no_grad():
        ...     same = torch.allclose(open_clip_text_features(model, tokens), model.encode_text(tokens), atol=1e-5)
        >>> same
        True
    """
    tower = _text_tower(model)
    positions = _pool_positions(tower, tokens)
    if positions is None:
        return model.encode_text(tokens)
    length = int(positions.max()) + 1
    tokens = tokens[:, :length]
    cast_dtype = tower.transformer.get_cast_dtype()
    x = tower.token_embedding(tokens).to(cast_dtype) + tower.positional_embedding[:length].to(cast_dtype)
    x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
    x = tower.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), positions]
    projection = tower.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Module) else x @ projection


class ClipEncoder:
    """Encode images and texts with a loaded CLIP model (``task="clip"``).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from clis.models import load_model
        >>> from clis.testing import build_tiny_hf_clip
        >>> enc = ClipEncoder(load_model(build_tiny_hf_clip(tempfile.mkdtemp()), "clip"))
        >>> pixels = enc.preprocess([Image.new("RGB", (40, 30), "red")])
        >>> enc.encode_images(pixels).shape[0]
        1
        >>> feats, truncated = enc.encode_texts(["a red cup", "word " * 100])
        >>> truncated
        [False, True]
    """

    def __init__(self, loaded):
        if loaded.task != "clip":
            raise ModelSpecError(f"model {loaded.spec} was loaded for task {loaded.task!r}, not 'clip'")
        self.loaded = loaded
        self.model = loaded.model
        self.backend = loaded.backend
        if self.backend == "open_clip":
            self._preprocess = loaded.processor["preprocess"]
            self._tokenizer = loaded.processor["tokenizer"]
        else:
            self._processor = loaded.processor

    # -- properties -----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def image_size(self) -> int:
        """Side of the square the images are resized/cropped to."""
        if self.backend == "open_clip":
            size = self.model.visual.image_size
            return int(size[0] if isinstance(size, (tuple, list)) else size)
        crop = getattr(self._processor.image_processor, "crop_size", None)
        if isinstance(crop, dict) and "height" in crop:
            return int(crop["height"])
        return int(self.model.config.vision_config.image_size)

    @property
    def context_length(self) -> int:
        """Maximum number of text tokens, start and end tokens included."""
        if self.backend == "open_clip":
            return int(self._tokenizer.context_length)
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def embed_dim(self) -> int:
        """Width of the joint image-text embedding."""
        if self.backend == "open_clip":
            return int(self.model.visual.output_dim)
        return int(self.model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        """The learned temperature, already exponentiated (100.0 for OpenAI CLIP)."""
        return float(self.model.logit_scale.detach().float().exp().item())

    # -- images ---------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> pixel tensor ``[N, 3, image_size, image_size]`` (the model's own transform)."""
        rgb = [im.convert("RGB") for im in images]
        if not rgb:
            return torch.empty(0, 3, self.image_size, self.image_size)
        if self.backend == "open_clip":
            return torch.stack([self._preprocess(im) for im in rgb])
        return self._processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixel tensor -> image embeddings ``[N, D]`` (not normalised)."""
        if len(pixels) == 0:
            return torch.empty(0, self.embed_dim, device=self.device, dtype=self.dtype)
        # A pinned tensor (the loader pins on CUDA) copies while the host goes on.
        pixels = pixels.to(device=self.device, dtype=self.dtype, non_blocking=pixels.is_pinned())
        if self.backend == "open_clip":
            return self.model.encode_image(pixels)
        out = self.model.get_image_features(pixel_values=pixels)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    # -- texts ----------------------------------------------------------------------------------

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Untruncated token counts, start/end tokens included."""
        if self.backend == "open_clip":
            inner = getattr(self._tokenizer, "tokenizer", None)
            if inner is not None:  # open_clip HFTokenizer wraps a transformers tokenizer
                return [len(ids) for ids in inner(list(texts), truncation=False, verbose=False)["input_ids"]]
            return [len(self._tokenizer.encode(t)) + 2 for t in texts]
        tokenizer = self._processor.tokenizer
        return [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]

    def truncated(self, texts: Sequence[str]) -> list[bool]:
        """One flag per text: True when it is longer than the context and will be cut.

        Cut texts keep their start and end tokens (``[SOT] first tokens [EOT]``): CLIP pools
        the text embedding at the end token, so it must survive the cut.
        """
        return [n > self.context_length for n in self.token_counts(list(texts))] if texts else []

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """Texts -> (embeddings ``[N, D]`` not normalised, one ``truncated`` flag per text)."""
        texts = list(texts)
        if not texts:
            return torch.empty(0, self.embed_dim, device=self.device, dtype=self.dtype), []
        truncated = self.truncated(texts)
        if self.backend == "open_clip":
            tokens = self._tokenizer(texts).to(self.device)
            return open_clip_text_features(self.model, tokens), truncated
        batch = self._processor.tokenizer(
            texts, padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        ).to(self.device)
        out = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return (out if isinstance(out, torch.Tensor) else out.pooler_output), truncated
