"""Reading, validating and writing layout files.

Three formats are read, and the format is detected from the file's shape:

- **canonical** ``layouts.json``: a JSON list of layouts (see ``clis.layout.Layout``), or an
  object ``{"layouts": [...]}``;
- **ACP scene graph**: a list of (or one) ``{"caption", "layout": [{"object", "bbox"}],
  "attributes", "relations"}`` items as written by Auto Cherry-Picker's LLM stage;
- **COCO instances**: ``{"images", "annotations", "categories"}`` with pixel boxes.

Every problem becomes one line naming the file, the record and the field, so a broken file
reports all of its problems at once.

Example:
    >>> import json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "layouts.json")
    >>> _ = open(path, "w").write(json.dumps([{"id": "a", "caption": "a cat",
    ...     "objects": [{"id": "cat-1", "label": "cat", "bbox": [0.1, 0.1, 0.5, 0.5]}]}]))
    >>> [layout.id for layout in load_layouts(path)]
    ['a']
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from clis.errors import LayoutFileError
from clis.layout import Layout, cross_reference_problems, label_from_object_name

FORMATS = ("canonical", "acp", "coco")


@dataclass
class ValidationReport:
    """What ``validate_file`` found: the layouts that parsed and one line per problem."""

    path: str
    format: str | None
    layouts: list[Layout] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        labels = Counter(label for layout in self.layouts for label in layout.labels)
        return {
            "file": self.path,
            "format": self.format,
            "layouts": len(self.layouts),
            "objects": sum(len(layout.objects) for layout in self.layouts),
            "relations": sum(len(layout.relations) for layout in self.layouts),
            "labels": len(labels),
            "top_labels": labels.most_common(5),
            "problems": len(self.problems),
        }


def _field_path(loc: Iterable[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(record)"


def _record_name(index: int, record: Any) -> str:
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)):
        return f"layout {index} (id {record['id']!r})"
    return f"layout {index}"


def _raw_cross_reference(record: dict[str, Any]) -> list[tuple[str, str]]:
    objects = record.get("objects")
    relations = record.get("relations")
    if not isinstance(objects, list) or not all(isinstance(o, dict) and isinstance(o.get("id"), str) for o in objects):
        return []
    pairs = [
        (r.get("subject"), r.get("object")) for r in relations if isinstance(r, dict)
    ] if isinstance(relations, list) else []
    return cross_reference_problems([o["id"] for o in objects], pairs)


def _validate_records(path: str, records: list[Any], report: ValidationReport) -> None:
    ids: dict[Any, int] = {}
    for index, record in enumerate(records):
        where = f"{path}: {_record_name(index, record)}"
        if not isinstance(record, dict):
            report.problems.append(f"{where}: expected an object, got {type(record).__name__}")
            continue
        problems: list[str] = []
        layout = None
        try:
            layout = Layout.model_validate(record)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "missing":
                    message = "required field is missing"
                problems.append(f"{where}: field {_field_path(error['loc'])}: {message}")
        for field_name, message in _raw_cross_reference(record):
            problems.append(f"{where}: field {field_name}: {message}")
        record_id = record.get("id")
        if isinstance(record_id, (str, int)):
            if record_id in ids:
                problems.append(f"{where}: field id: duplicate layout id {record_id!r} (first used by layout {ids[record_id]})")
            else:
                ids[record_id] = index
        report.problems.extend(problems)
        if layout is not None and not problems:
            report.layouts.append(layout)


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LayoutFileError(str(path), [f"{path}: file not found"]) from None
    except OSError as exc:
        raise LayoutFileError(str(path), [f"{path}: cannot read file: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LayoutFileError(
            str(path), [f"{path}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"]
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutFileError(str(path), [f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"]) from None


def detect_format(data: Any) -> str | None:
    """Name the format of parsed JSON: ``canonical``, ``acp``, ``coco``, or None."""
    if isinstance(data, dict):
        if "annotations" in data and "images" in data:
            return "coco"
        if "layouts" in data:
            return "canonical"
        if "layout" in data:
            return "acp"
        return None
    if isinstance(data, list):
        if not data:
            return "canonical"
        first = next((item for item in data if isinstance(item, dict)), None)
        if first is None:
            return None
        if "layout" in first and "objects" not in first:
            return "acp"
        return "canonical"
    return None


# --- ACP scene graphs -------------------------------------------------------------------


def _acp_attributes(raw: Any, name: str) -> list[str]:
    if isinstance(raw, dict):
        value = raw.get(name, [])
    elif isinstance(raw, list):
        value = next((item.get("attributes", []) for item in raw if isinstance(item, dict) and item.get("object") == name), [])
    else:
        value = []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def acp_item_to_record(item: dict[str, Any], index: int) -> dict[str, Any]:
    """Turn one ACP scene-graph item into a canonical layout record (not yet validated).

    Keys the canonical format does not know (groups, depth, ...) are kept on the layout.
    """
    known = {"id", "caption", "layout", "attributes", "relations", "width", "height", "images"}
    objects = []
    for entry in item.get("layout") or []:
        if isinstance(entry, dict) and isinstance(entry.get("object"), str):
            name = entry["object"]
            extra = {k: v for k, v in entry.items() if k not in {"object", "bbox"}}
            objects.append(
                {
                    "id": name,
                    "label": label_from_object_name(name),
                    "bbox": entry.get("bbox"),
                    "attributes": _acp_attributes(item.get("attributes"), name),
                    **extra,
                }
            )
        else:
            objects.append(entry)  # let validation name what is wrong with it
    record = {
        "id": str(item["id"]) if isinstance(item.get("id"), (str, int)) else str(index),
        "caption": item.get("caption", ""),
        "objects": objects,
        "relations": item.get("relations") or [],
    }
    for key in ("width", "height", "images"):
        if key in item:
            record[key] = item[key]
    record.update({k: v for k, v in item.items() if k not in known})
    return record


def layouts_to_acp(layouts: Iterable[Layout]) -> list[dict[str, Any]]:
    """Write layouts as ACP scene-graph items (``layout: [{object, bbox}]``)."""
    items = []
    for layout in layouts:
        item: dict[str, Any] = {
            "id": layout.id,
            "caption": layout.caption,
            "layout": [{"object": o.id, "bbox": list(o.bbox)} for o in layout.objects],
            "attributes": {o.id: list(o.attributes) for o in layout.objects if o.attributes},
            "relations": [r.model_dump(include={"subject", "relation", "object"}) for r in layout.relations],
        }
        if layout.width and layout.height:
            item["width"], item["height"] = layout.width, layout.height
        items.append(item)
    return items


# --- COCO -------------------------------------------------------------------------------


def layouts_from_coco(data: dict[str, Any], source: str = "<coco>") -> list[Layout]:
    """Build one layout per COCO image from its (non-crowd) instance annotations.

    Pixel boxes are normalised by the image size. Fields written by ``layouts_to_coco``
    (``clis_layout_id``, ``caption``, ``clis_object_id``, ``attributes``, ...) are read back so
    that a canonical -> COCO -> canonical round trip is lossless.
    """
    report = ValidationReport(path=source, format="coco")
    records = _coco_records(data, source, report)
    if report.problems:
        raise LayoutFileError(source, report.problems)
    _validate_records(source, records, report)
    if report.problems:
        raise LayoutFileError(source, report.problems)
    return report.layouts


def _coco_records(data: dict[str, Any], source: str, report: ValidationReport) -> list[dict[str, Any]]:
    categories = {}
    for i, cat in enumerate(data.get("categories") or []):
        if not isinstance(cat, dict) or "id" not in cat or not isinstance(cat.get("name"), str):
            report.problems.append(f"{source}: categories[{i}]: field id/name: a category needs an id and a name")
            continue
        categories[cat["id"]] = cat["name"]
    by_image: dict[Any, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, dict) or "image_id" not in ann:
            report.problems.append(f"{source}: annotations[{i}]: field image_id: required field is missing")
            continue
        by_image[ann["image_id"]].append((i, ann))
    records = []
    for index, image in enumerate(data.get("images") or []):
        if not isinstance(image, dict) or "id" not in image:
            report.problems.append(f"{source}: images[{index}]: field id: required field is missing")
            continue
        width, height = image.get("width"), image.get("height")
        where = f"{source}: images[{index}] (id {image['id']!r})"
        if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
            report.problems.append(f"{where}: field width/height: positive image size required to normalise boxes")
            continue
        file_name = image.get("file_name")
        layout_id = image.get("clis_layout_id") or (Path(file_name).stem if file_name else str(image["id"]))
        objects, counters = [], Counter()
        for ann_index, ann in by_image.get(image["id"], []):
            if ann.get("iscrowd"):
                continue  # crowd regions are not single instances
            label = categories.get(ann.get("category_id"))
            if label is None:
                report.problems.append(
                    f"{source}: annotations[{ann_index}]: field category_id: unknown category {ann.get('category_id')!r}"
                )
                continue
            box = ann.get("bbox")
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                report.problems.append(f"{source}: annotations[{ann_index}]: field bbox: expected [x, y, w, h] numbers")
                continue
            counters[label] += 1
            obj = {
                "id": ann.get("clis_object_id") or f"{label}-{counters[label]}",
                "label": label,
                "bbox": [box[0] / width, box[1] / height, box[2] / width, box[3] / height],
            }
            for key in ("attributes", "description"):
                if key in ann:
                    obj[key] = ann[key]
            objects.append(obj)
        caption = image.get("caption")
        if not caption:
            names = [o["label"] for o in objects]
            caption = "a photo of " + ", ".join(names) if names else ""
        record = {
            "id": str(layout_id),
            "caption": caption,
            "width": int(width),
            "height": int(height),
            "objects": objects,
            "relations": image.get("clis_relations") or [],
        }
        if file_name:
            record["images"] = [file_name]
        records.append(record)
    return records


def layouts_to_coco(
    layouts: Iterable[Layout],
    file_names: dict[str, str] | None = None,
    sizes: dict[str, tuple[int, int]] | None = None,
    default_size: tuple[int, int] = (512, 512),
) -> dict[str, Any]:
    """COCO instances dict for ``layouts``; boxes become pixels of each image's size.

    The size of a layout's image is taken from ``sizes[layout.id]``, else the layout's own
    ``width``/``height``, else ``default_size``. Category ids follow sorted label order,
    starting at 1.
    """
    layouts = list(layouts)
    file_names = file_names or {}
    sizes = sizes or {}
    labels = sorted({o.label for layout in layouts for o in layout.objects})
    category_ids = {label: i + 1 for i, label in enumerate(labels)}
    images, annotations = [], []
    for image_id, layout in enumerate(layouts, start=1):
        width, height = sizes.get(layout.id) or (
            (layout.width, layout.height) if layout.width and layout.height else default_size
        )
        images.append(
            {
                "id": image_id,
                "file_name": file_names.get(layout.id) or (layout.images[0] if layout.images else f"{layout.id}.png"),
                "width": int(width),
                "height": int(height),
                "caption": layout.caption,
                "clis_layout_id": layout.id,
                "clis_relations": [r.model_dump(include={"subject", "relation", "object"}) for r in layout.relations],
            }
        )
        for obj in layout.objects:
            x, y, w, h = obj.pixel_box(width, height)
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_ids[obj.label],
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
                "clis_object_id": obj.id,
            }
            if obj.attributes:
                annotation["attributes"] = list(obj.attributes)
            if obj.description:
                annotation["description"] = obj.description
            annotations.append(annotation)
    return {
        "info": {"description": "written by clis"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_ids[label], "name": label, "supercategory": "object"} for label in labels],
    }


# --- entry points -----------------------------------------------------------------------


def validate_file(path: str | Path, format: str = "auto") -> ValidationReport:
    """Read and check a layouts file; never raises for content problems, only reports them."""
    path = Path(path)
    report = ValidationReport(path=str(path), format=None)
    try:
        data = _read_json(path)
    except LayoutFileError as exc:
        report.problems.extend(exc.problems)
        return report
    detected = detect_format(data) if format == "auto" else format
    if detected not in FORMATS:
        report.problems.append(
            f"{path}: top level: not a layouts file (expected a list of layouts, an ACP scene graph or COCO instances JSON)"
        )
        return report
    report.format = detected
    if detected == "coco":
        if not isinstance(data, dict):
            report.problems.append(f"{path}: top level: COCO instances JSON must be an object")
            return report
        records = _coco_records(data, str(path), report)
    else:
        if isinstance(data, dict):
            items = data["layouts"] if detected == "canonical" else [data]
        else:
            items = data
        if not isinstance(items, list):
            report.problems.append(f"{path}: top level: field layouts: expected a list of layouts")
            return report
        if detected == "acp":
            records = [
                acp_item_to_record(item, i) if isinstance(item, dict) else item for i, item in enumerate(items)
            ]
        else:
            records = items
    _validate_records(str(path), records, report)
    return report


def load_layouts(path: str | Path, format: str = "auto") -> list[Layout]:
    """Load and validate a layouts file; raise ``LayoutFileError`` listing every problem."""
    report = validate_file(path, format=format)
    if report.problems:
        raise LayoutFileError(str(path), report.problems)
    return report.layouts


def layout_to_record(layout: Layout) -> dict[str, Any]:
    return layout.model_dump(exclude_none=True, exclude_defaults=False)


def save_layouts(layouts: Iterable[Layout], path: str | Path, format: str = "canonical") -> Path:
    """Write layouts as canonical JSON (default), ``acp`` or ``coco``."""
    layouts = list(layouts)
    if format == "canonical":
        data: Any = [layout_to_record(layout) for layout in layouts]
    elif format == "acp":
        data = layouts_to_acp(layouts)
    elif format == "coco":
        data = layouts_to_coco(layouts)
    else:
        raise ValueError(f"unknown layout format {format!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def boxes_close(a: Iterable[float], b: Iterable[float], tol: float = 1e-9) -> bool:
    """True when two boxes agree to ``tol``; pixel round trips differ by float rounding only."""
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tol) for x, y in zip(a, b))
