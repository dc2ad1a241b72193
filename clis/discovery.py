"""Find each layout's candidate images in a folder.

A layout with id ``<id>`` claims, in this order:

1. the files listed in its own ``images`` field (relative to the images folder, or absolute);
2. ``<images>/<id>.<ext>``;
3. every image in the folder ``<images>/<id>/`` (as written by ``clis generate``);
4. ``<images>/<id>_<k>.<ext>`` where ``k`` is an integer.

``<ext>`` is any of ``IMAGE_EXTENSIONS`` (case-insensitive). Candidates are ordered by the rule
that found them, then naturally by name (``2.png`` before ``10.png``). An exact id match wins
over the ``_<k>`` rule, so layouts ``a`` and ``a_1`` never fight over ``a_1.png``.

Nothing is silently dropped: layouts without any candidate are listed in ``missing``; image
files that no layout claims are listed in ``orphans``, including images nested deeper than
``<images>/<id>/`` (rule 3 takes only the folder's own files); a file that a layout lists but
that does not exist stays a candidate (scoring records it as "file not found", and a resumed
run picks it up once it is there) and is also listed in ``not_found``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from clis.errors import InputError
from clis.layout import Layout

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

_NUMBERED = re.compile(r"^(?P<id>.+)_(?P<k>\d+)$")


def natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.as_posix())]


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class Discovery:
    """Candidates per layout id, plus what could not be matched."""

    candidates: dict[str, list[Path]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)
    not_found: list[tuple[str, Path]] = field(default_factory=list)  # (layout id, listed file)

    def pairs(self) -> list[tuple[str, Path]]:
        """``(layout_id, image)`` for every candidate, in layout order."""
        return [(layout_id, path) for layout_id, paths in self.candidates.items() for path in paths]

    @property
    def n_candidates(self) -> int:
        return sum(len(paths) for paths in self.candidates.values())


def discover_candidates(images_dir: str | Path, layouts: Iterable[Layout]) -> Discovery:
    """Match the image files under ``images_dir`` to ``layouts`` (see the module docstring)."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InputError(f"{root}: images folder not found")
    layouts = list(layouts)
    ids = {layout.id for layout in layouts}

    # Each file in the folder goes to at most one layout.
    top_level: dict[str, list[Path]] = {}
    numbered: dict[str, list[Path]] = {}
    unclaimed: set[Path] = set()
    for path in sorted(root.iterdir(), key=natural_key):
        if path.is_dir():
            # A layout's folder gives only its own files; deeper ones belong to no rule.
            owned = path.name in ids
            unclaimed.update(p for p in path.rglob("*") if is_image_file(p) and not (owned and p.parent == path))
            continue
        if not is_image_file(path):
            continue
        if path.stem in ids:
            top_level.setdefault(path.stem, []).append(path)
            continue
        match = _NUMBERED.match(path.stem)
        if match and match.group("id") in ids:
            numbered.setdefault(match.group("id"), []).append(path)
        else:
            unclaimed.add(path)

    discovery = Discovery()
    claimed: set[Path] = set()
    for layout in layouts:
        found: list[Path] = []
        for name in layout.images or []:
            listed = Path(name)
            path = listed if listed.is_absolute() else root / listed
            found.append(path)
            if not path.is_file():
                discovery.not_found.append((layout.id, path))
        found += top_level.get(layout.id, [])
        folder = root / layout.id
        if folder.is_dir():
            found += sorted((p for p in folder.iterdir() if is_image_file(p)), key=natural_key)
        found += numbered.get(layout.id, [])
        ordered: list[Path] = []
        seen: set[Path] = set()
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                ordered.append(path)
        claimed |= seen
        if ordered:
            discovery.candidates[layout.id] = ordered
        else:
            discovery.missing.append(layout.id)
    discovery.orphans = sorted((p for p in unclaimed if p.resolve() not in claimed), key=natural_key)
    return discovery
