"""Sentence embeddings from a loaded ``text-embedding`` model (category-name similarity etc.).

Pooling follows the sentence-transformers files in the model folder when they are there
(``1_Pooling/config.json``, a ``Normalize`` module in ``modules.json``), so
``embedded:minilm`` gives the same vectors as ``SentenceTransformer(all-MiniLM-L6-v2)``.
Plain transformers encoders fall back to mean pooling over real tokens + L2 normalisation,
the usual recipe for sentence similarity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from clis.errors import InputError, ModelSpecError
from clis.jsonio import read_json


def _read_json(path: Path) -> dict | list | None:
    """An optional sentence-transformers file: None when the model folder has none.

    One that is there but broken is an error naming it: falling back to the defaults would
    pool or truncate differently from what the folder says, and silently change every vector.
    """
    if not path.is_file():
        return None
    try:
        return read_json(path, "sentence-transformers settings file")
    except InputError as exc:
        raise ModelSpecError(str(exc)) from None


class TextEmbedder:
    """Encode texts into sentence vectors with a loaded ``text-embedding`` model.

    Example:
        >>> from clis.models import load_model
        >>> emb = TextEmbedder(load_model("embedded:minilm", "text-embedding"))
        >>> v = emb.encode(["dog", "puppy", "airplane"])
        >>> bool((v[0] @ v[1]) > (v[0] @ v[2]))
        True
    """

    def __init__(self, loaded, max_length: int | None = None):
        if loaded.task != "text-embedding":
            raise ModelSpecError(f"model {loaded.spec} was loaded for task {loaded.task!r}, not 'text-embedding'")
        self.model = loaded.model
        self.tokenizer = loaded.processor
        folder = Path(loaded.source) if loaded.source else None
        pooling = _read_json(folder / "1_Pooling" / "config.json") if folder else None
        modules = _read_json(folder / "modules.json") if folder else None
        st_config = _read_json(folder / "sentence_bert_config.json") if folder else None
        self.pooling = "cls" if isinstance(pooling, dict) and pooling.get("pooling_mode_cls_token") else "mean"
        if isinstance(modules, list):
            self.normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith("Normalize") for m in modules)
        else:
            self.normalize = True
        configured = st_config.get("max_seq_length") if isinstance(st_config, dict) else None
        if isinstance(configured, bool) or not isinstance(configured, int) or configured <= 0:
            configured = None
        self.max_length = int(max_length or configured or min(self.tokenizer.model_max_length, 512))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Texts -> ``[N, D]`` float32 vectors (unit length when the model says so)."""
        device = next(self.model.parameters()).device
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(device)
            hidden = self.model(**batch).last_hidden_state.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled)
        if not chunks:
            return torch.empty(0, self.model.config.hidden_size)
        return torch.cat(chunks)
