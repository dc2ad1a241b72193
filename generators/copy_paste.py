"""Copy-paste: the classic non-diffusion baseline. Cut-outs composited at the layout's boxes.

Each object of the layout gets a cut-out of its label, resized to its box and pasted with its
alpha mask; big boxes are pasted first so small objects stay on top. It runs on CPU with no
model, so it is both a baseline for synthetic data ("is diffusion worth it?") and a way to
make realistic-looking candidates offline.

Cut-outs come from either

* a folder with one sub-folder per label holding RGBA images (``cutouts/cat/1.png``); the alpha
  channel is the mask (images without alpha are pasted whole), or
* a COCO annotation file with segmentation masks (polygons or RLE) plus its images folder
  (``--cutout-images``, default: the folder holding the annotation file).

Backgrounds come from a folder of images (``--backgrounds``), cropped to the canvas, or are a
seeded two-colour gradient.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from clis import jsonio
from clis.errors import InputError
from clis.layout import Layout

from generators.base import DEFAULT_SIZE, GenerationError, GeneratorAdapter

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def normalise_label(label: str) -> str:
    return " ".join(label.lower().replace("_", " ").split())


@dataclass(frozen=True)
class Cutout:
    """Where one cut-out comes from: an RGBA file, or a COCO annotation of an image."""

    image_path: Path
    segmentation: Any = None  # COCO polygons / RLE; None: the file's own alpha channel
    bbox: tuple[float, float, float, float] | None = None  # COCO pixel xywh


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_box(value: Any) -> bool:
    return (
        isinstance(value, list) and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and value[2] > 0 and value[3] > 0
    )  # fmt: skip


def _field(path: Path, where: str, record: Any, key: str, valid: Callable[[Any], bool], expected: str) -> Any:
    """``record[key]`` of a COCO cut-out file, or a one-line error naming file, record and field."""
    if not isinstance(record, dict):
        raise InputError(f"{path}: {where}: expected an object")
    if key not in record:
        raise InputError(f"{path}: {where}: field {key!r}: missing (expected {expected})")
    if not valid(record[key]):
        raise InputError(f"{path}: {where}: field {key!r}: expected {expected}, got {record[key]!r}")
    return record[key]


class CutoutLibrary:
    """Cut-outs by normalised label, read from a per-label folder or a COCO file with masks."""

    def __init__(self, by_label: dict[str, list[Cutout]], source: str):
        self.by_label = by_label
        self.source = source

    @classmethod
    def from_path(cls, path: str | Path, images_dir: str | Path | None = None, min_area: float = 256.0) -> "CutoutLibrary":
        path = Path(path)
        if path.is_dir():
            return cls.from_folder(path)
        if path.is_file():
            return cls.from_coco(path, images_dir, min_area)
        raise InputError(f"{path}: cut-out source not found (give a folder of per-label RGBA images or a COCO json)")

    @classmethod
    def from_folder(cls, root: Path) -> "CutoutLibrary":
        by_label: dict[str, list[Cutout]] = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                by_label.setdefault(normalise_label(sub.name), []).extend(Cutout(f) for f in files)
        if not by_label:
            raise InputError(f"{root}: no cut-outs found (expected <label>/<image>.png sub-folders)")
        return cls(by_label, str(root))

    @classmethod
    def from_coco(cls, path: Path, images_dir: str | Path | None, min_area: float) -> "CutoutLibrary":
        data = jsonio.read_json(path, "COCO cut-out file")
        if not isinstance(data, dict):
            raise InputError(f"{path}: top level: a COCO file is a JSON object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise InputError(f"{path}: field {key!r}: a COCO file needs a list here")
        root = Path(images_dir) if images_dir else path.parent
        files, names = {}, {}
        for i, im in enumerate(data["images"]):
            where = f"images[{i}]"
            files[_field(path, where, im, "id", _is_id, "an id")] = root / _field(
                path, where, im, "file_name", _is_name, "a file name"
            )
        for i, cat in enumerate(data["categories"]):
            where = f"categories[{i}]"
            names[_field(path, where, cat, "id", _is_id, "an id")] = normalise_label(
                _field(path, where, cat, "name", _is_name, "a name")
            )
        by_label: dict[str, list[Cutout]] = {}
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict):
                raise InputError(f"{path}: annotations[{i}]: expected an object")
            seg = ann.get("segmentation")
            # Crowd regions are not one object; tiny ones blow up into mush when resized.
            if not seg or ann.get("iscrowd") or ann.get("area", min_area) < min_area:
                continue
            if ann.get("image_id") not in files or ann.get("category_id") not in names:
                raise InputError(f"{path}: annotations[{i}]: image_id or category_id names nothing")
            bbox = _field(path, f"annotations[{i}]", ann, "bbox", _is_box, "[x, y, w, h] in pixels with w, h > 0")
            seg = json.dumps(seg)  # hashable, so cut-outs can be cached
            by_label.setdefault(names[ann["category_id"]], []).append(Cutout(files[ann["image_id"]], seg, tuple(bbox)))
        if not by_label:
            raise InputError(f"{path}: no annotation with a segmentation mask to cut out")
        return cls(by_label, str(path))

    def choices(self, label: str) -> list[Cutout]:
        key = normalise_label(label)
        # Singular/plural mismatches ("boxes" vs "box") are the common miss between vocabularies.
        for candidate in (key, key[:-1] if key.endswith("s") else None, key[:-2] if key.endswith("es") else None, key + "s", key + "es"):
            if candidate in self.by_label:
                return self.by_label[candidate]
        raise GenerationError(
            f"no cut-out for label {label!r} in {self.source} (labels: {', '.join(sorted(self.by_label))})"
        )


@lru_cache(maxsize=128)
def load_cutout(cutout: Cutout) -> Image.Image:
    """The cut-out as an RGBA image cropped to the object."""
    try:
        image = Image.open(cutout.image_path)
        image.load()
    except OSError as exc:
        raise GenerationError(f"{cutout.image_path}: cannot read cut-out image: {exc}") from None
    if cutout.segmentation is None:
        return image.convert("RGBA")
    from pycocotools import mask as mask_utils

    rgb = image.convert("RGB")
    seg = json.loads(cutout.segmentation)
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, rgb.height, rgb.width))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, rgb.height, rgb.width)
    else:
        rle = seg
    mask = mask_utils.decode(rle).astype(np.uint8) * 255
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(mask))
    x, y, w, h = cutout.bbox
    return rgba.crop((int(x), int(y), int(np.ceil(x + w)), int(np.ceil(y + h))))


class CopyPasteGenerator(GeneratorAdapter):
    """Composites a seeded choice of cut-outs onto a background at the layout's boxes."""

    name = "copy-paste"

    def __init__(
        self,
        cutouts: str | Path | None = None,
        cutout_images: str | Path | None = None,
        backgrounds: str | Path | None = None,
        flip: bool = True,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
    ):
        super().__init__(width, height)
        if cutouts is None:
            raise InputError(
                "generator 'copy-paste' needs --cutouts: a folder of <label>/<image>.png RGBA cut-outs "
                "or a COCO annotation file with segmentation masks"
            )
        self.library = CutoutLibrary.from_path(cutouts, cutout_images)
        self.backgrounds: list[Path] = []
        if backgrounds is not None:
            root = Path(backgrounds)
            if not root.is_dir():
                raise InputError(f"{root}: --backgrounds must be a folder of images")
            self.backgrounds = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.backgrounds:
                raise InputError(f"{root}: no background images found")
        self.flip = flip
        self._source = (str(cutouts), str(cutout_images) if cutout_images else None, str(backgrounds) if backgrounds else None)

    def generate(self, layout: Layout, seeds: Sequence[int]) -> list[Image.Image]:
        return [self._compose(layout, int(seed)) for seed in seeds]

    def _background(self, rng: np.random.Generator) -> Image.Image:
        if self.backgrounds:
            path = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
            with Image.open(path) as im:
                return ImageOps.fit(im.convert("RGB"), (self.width, self.height))
        top, bottom = rng.integers(0, 256, size=(2, 3))
        t = np.linspace(0.0, 1.0, self.height)[:, None, None]
        gradient = (1 - t) * top + t * bottom
        pixels = np.broadcast_to(gradient, (self.height, self.width, 3)).round().astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(pixels), "RGB")

    def _compose(self, layout: Layout, seed: int) -> Image.Image:
        rng = np.random.default_rng(seed)
        canvas = self._background(rng).convert("RGBA")
        for obj in sorted(layout.objects, key=lambda o: -o.area):
            options = self.library.choices(obj.label)
            cutout = load_cutout(options[int(rng.integers(len(options)))])
            if self.flip and rng.random() < 0.5:
                cutout = ImageOps.mirror(cutout)
            x, y, w, h = obj.pixel_box(self.width, self.height)
            left, top = int(round(x)), int(round(y))
            size = (max(1, int(round(x + w)) - left), max(1, int(round(y + h)) - top))
            # The cut-out is stretched to the box so the layout box stays the tight annotation box.
            canvas.alpha_composite(cutout.resize(size, Image.Resampling.LANCZOS), (left, top))
        return canvas.convert("RGB")

    def config(self) -> dict[str, Any]:
        cutouts, cutout_images, backgrounds = self._source
        return {
            **super().config(),
            "cutouts": cutouts,
            "cutout_images": cutout_images,
            "backgrounds": backgrounds,
            "flip": self.flip,
            "labels": sorted(self.library.by_label),
        }
