"""The layout data model: a caption, boxed objects and the relations between them.

Boxes are normalised ``[x, y, w, h]`` with the origin at the top left, so a layout is
independent of the resolution an image is generated at.

Example:
    >>> from clis.layout import Layout
    >>> layout = Layout.model_validate({
    ...     "id": "tea", "caption": "a red cup on a table",
    ...     "objects": [
    ...         {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.4, 0.3, 0.2, 0.2]},
    ...         {"id": "table-1", "label": "table", "bbox": [0.1, 0.5, 0.8, 0.5]},
    ...     ],
    ...     "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}],
    ... })
    >>> layout.objects[0].phrase
    'red cup'
    >>> layout.objects[0].xyxy
    (0.4, 0.3, 0.6000000000000001, 0.5)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any

from annotated_types import Len
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Boxes that overshoot the canvas by a rounding error are accepted; anything more is an error.
BOX_TOLERANCE = 1e-4
# A millionth of the image side: a thinner box has no pixel even at 100 megapixels, and
# x + w must stay greater than x in floating point (a 5e-324 box passed validation, but
# scoring then found it outside the image).
MIN_BOX_SIZE = 1e-6
# Layout ids name files (images/<id>.png, <id>-<n>.png, <id>/): 255 bytes per name on ext4,
# XFS and APFS, less room for "-<n>" and the longest image extension.
MAX_ID_BYTES = 200

BoxList = Annotated[list[float], Len(min_length=4, max_length=4)]

_INSTANCE_SUFFIX = re.compile(r"^(?P<label>.+?)-(?P<index>\d+)$")


def label_from_object_name(name: str) -> str:
    """``"cat-1"`` -> ``"cat"``; names without a numeric suffix are returned as they are."""
    match = _INSTANCE_SUFFIX.match(name.strip())
    return match.group("label") if match else name.strip()


def check_box(box: list[float]) -> list[float]:
    """Raise ``ValueError`` with a precise reason when a normalised xywh box is unusable."""
    x, y, w, h = box
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"box {box} has a non-finite value")
    if w <= 0 or h <= 0:
        raise ValueError(f"box {box} is degenerate: width and height must be > 0")
    if w < MIN_BOX_SIZE or h < MIN_BOX_SIZE:
        raise ValueError(
            f"box {box} is degenerate: width and height must be at least {MIN_BOX_SIZE:g} of the image"
        )
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE:
        raise ValueError(f"box {box} starts outside the canvas: x and y must be >= 0")
    if x + w > 1 + BOX_TOLERANCE or y + h > 1 + BOX_TOLERANCE:
        raise ValueError(
            f"box {box} ends outside the canvas: x + w and y + h must be <= 1 "
            "(boxes are normalised [x, y, w, h])"
        )
    return box


class LayoutObject(BaseModel):
    """One object instance of a layout, such as ``cup-1``."""

    model_config = ConfigDict(strict=True, extra="allow")

    id: str = Field(min_length=1)
    label: str = Field(min_length=1)
    bbox: BoxList
    description: str | None = None
    attributes: list[str] = Field(default_factory=list)

    @field_validator("bbox")
    @classmethod
    def _box_in_canvas(cls, box: list[float]) -> list[float]:
        return check_box(box)

    @field_validator("label")
    @classmethod
    def _label_not_blank(cls, label: str) -> str:
        if not label.strip():
            raise ValueError("label is blank")
        return label

    @property
    def phrase(self) -> str:
        """The text that describes this object: its description, else attributes + label."""
        if self.description and self.description.strip():
            return self.description.strip()
        return " ".join([*(a.strip() for a in self.attributes if a.strip()), self.label.strip()])

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return (x, y, x + w, y + h)

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return (x + w / 2, y + h / 2)

    @property
    def area(self) -> float:
        return self.bbox[2] * self.bbox[3]

    def pixel_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box as pixel ``[x, y, w, h]`` on a ``width`` x ``height`` image."""
        x, y, w, h = self.bbox
        return (x * width, y * height, w * width, h * height)


class Relation(BaseModel):
    """``subject`` ids, the relation words, ``object`` ids: ``cup-1 on table-1``."""

    model_config = ConfigDict(strict=True, extra="allow")

    subject: list[str] = Field(min_length=1)
    relation: str = Field(min_length=1)
    object: list[str] = Field(min_length=1)

    @field_validator("subject", "object", mode="before")
    @classmethod
    def _single_id_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Layout(BaseModel):
    """A caption with its boxed objects and relations; one scene to generate."""

    model_config = ConfigDict(strict=True, extra="allow")

    id: str = Field(min_length=1)
    caption: str = ""
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    objects: list[LayoutObject] = Field(min_length=1)
    relations: list[Relation] = Field(default_factory=list)
    images: list[str] | None = None

    @field_validator("id")
    @classmethod
    def _id_names_files_inside_the_folder(cls, layout_id: str) -> str:
        # Candidate discovery looks for images/<id>.<ext> and images/<id>/: an id that is a
        # path would make it read (or ``clis generate`` write) outside the images folder.
        if layout_id in {".", ".."} or "/" in layout_id or "\\" in layout_id:
            raise ValueError(
                f"layout id {layout_id!r} cannot name image files: "
                "'.', '..' and ids containing '/' or '\\' would point outside the images folder"
            )
        size = len(layout_id.encode("utf-8"))
        if size > MAX_ID_BYTES:
            raise ValueError(
                f"layout id {layout_id[:40]!r}... is {size} bytes long: ids name image files "
                f"(images/<id>-<n>.png), and file systems allow 255 bytes per name, so at most {MAX_ID_BYTES}"
            )
        return layout_id

    def get_object(self, object_id: str) -> LayoutObject:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(f"layout {self.id!r} has no object {object_id!r}")

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objects]

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field problems as ``(field, message)``: duplicate ids, dangling relations."""
        return cross_reference_problems(
            [o.id for o in self.objects], [(r.subject, r.object) for r in self.relations]
        )


def layout_sha256(layout: Layout) -> str:
    """Hash of the layout's canonical JSON (sorted keys, no spaces): the same layout read from
    any file format hashes the same. ``clis generate`` records it per layout, so resuming and
    ``clis score`` can tell when a layout changed since its images were made."""
    data = layout.model_dump(mode="json", exclude_none=True)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cross_reference_problems(
    object_ids: list[Any], relations: list[tuple[Any, Any]]
) -> list[tuple[str, str]]:
    """Duplicate object ids and relations naming unknown objects, as ``(field, message)``.

    Works on raw values too, so a record that fails type validation still gets these checks;
    references of the wrong type are skipped here because type validation already names them.
    """
    found: list[tuple[str, str]] = []
    seen: dict[Any, int] = {}
    for i, object_id in enumerate(object_ids):
        if object_id in seen:
            found.append((f"objects[{i}].id", f"duplicate object id {object_id!r} (first used by objects[{seen[object_id]}])"))
        else:
            seen[object_id] = i
    for i, sides in enumerate(relations):
        for side, refs in zip(("subject", "object"), sides):
            for ref in [refs] if isinstance(refs, str) else refs if isinstance(refs, list) else []:
                if isinstance(ref, str) and ref not in seen:
                    known = ", ".join(str(k) for k in seen)
                    found.append((f"relations[{i}].{side}", f"names unknown object {ref!r} (known: {known})"))
    return found
