"""Find each layout's candidate images in a folder.

A layout with id ``<id>`` claims, in this order:

1. the files listed in its own ``images`` field (relative to the images folder, or absolute);
2. every image under the folder named by its ``img_dir`` key (what a scored ACP item has),
   searched recursively (``img_dir/gc5-seed0-alpha0.8/0.png``), except refined copies and
   previews: file names matching ``SKIP_PATTERNS`` (``*_xl_*``, ``*_boxes.*``; pass ``skip``
   to change that). ``img_dir`` is relative to the images folder, or absolute; either way it
   must lie inside the images folder once symlinks are resolved, and so must each file found
   there: an ``img_dir`` outside it (``../run``, ``/elsewhere``) is refused, with a one-line
   warning and an entry in ``refused``, and is not read;
3. ``<images>/<id>.<ext>``;
4. every image in the folder ``<images>/<id>/`` (as written by ``clis generate``);
5. ``<images>/<id>_<k>.<ext>`` where ``k`` is an integer.

``<ext>`` is any of ``IMAGE_EXTENSIONS`` (case-insensitive). Candidates are ordered by the rule
that found them, then naturally by name (``2.png`` before ``10.png``). An exact id match wins
over the ``_<k>`` rule, so layouts ``a`` and ``a_1`` never fight over ``a_1.png``.

Nothing is silently dropped: layouts without any candidate are listed in ``missing``; image
files that no layout claims are listed in ``orphans``, including images nested deeper than
``<images>/<id>/`` (rule 4 takes only the folder's own files) and not under an ``img_dir``
(files skipped there by ``SKIP_PATTERNS`` are not orphans either); a file that a layout lists but
that does not exist stays a candidate (scoring records it as "file not found", and a resumed
run picks it up once it is there) and is also listed in ``not_found``.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from clis.errors import InputError
from clis.layout import Layout

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

# File names under an ``img_dir`` that are not candidates: ACP's refined (SDXL) copies and
# InstanceDiffusion's box previews. Matched case-insensitively against the file name.
SKIP_PATTERNS = ("*_xl_*", "*_boxes.*")

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"^(?P<id>.+)_(?P<k>\d+)$")


def natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.as_posix())]


def is_image_file(path: Path) -> bool:
    return _is_file(path) and path.suffix.lower() in IMAGE_EXTENSIONS


# pathlib's is_file/is_dir raise on a name too long for the file system (a 300-character
# layout id as images/<id>/): no such file can exist, so it is simply not there.
def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


@dataclass
class Discovery:
    """Candidates per layout id, plus what could not be matched."""

    candidates: dict[str, list[Path]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)
    not_found: list[tuple[str, Path]] = field(default_factory=list)  # (layout id, listed file)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (layout id, why its img_dir was not read)

    def pairs(self) -> list[tuple[str, Path]]:
        """``(layout_id, image)`` for every candidate, in layout order."""
        return [(layout_id, path) for layout_id, paths in self.candidates.items() for path in paths]

    @property
    def n_candidates(self) -> int:
        return sum(len(paths) for paths in self.candidates.values())


def _inside(path: Path, root: Path) -> bool:
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def _skipped(path: Path, skip: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path.name.lower(), pattern.lower()) for pattern in skip)


def _img_dir(root: Path, layout: Layout) -> tuple[Path | None, str | None]:
    """The layout's ``img_dir`` folder, or None; with the reason when it is refused."""
    value = (layout.model_extra or {}).get("img_dir")
    if value is None:
        return None, None
    if not isinstance(value, str) or not value.strip():
        return None, f"img_dir must be a folder path, got {value!r}"
    folder = Path(value) if Path(value).is_absolute() else root / value
    if not _inside(folder, root.resolve()):
        return None, f"img_dir {value!r} is outside the images folder {str(root)!r}; only files under it are read"
    if not _is_dir(folder):
        return None, f"img_dir {value!r} is not a folder under {str(root)!r}"
    return folder, None


def discover_candidates(
    images_dir: str | Path, layouts: Iterable[Layout], skip: Iterable[str] = SKIP_PATTERNS
) -> Discovery:
    """Match the image files under ``images_dir`` to ``layouts`` (see the module docstring).
    ``skip``: file-name patterns that are never candidates under an ``img_dir``."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InputError(f"{root}: images folder not found")
    layouts = list(layouts)
    ids = {layout.id for layout in layouts}
    skip = tuple(skip)
    real_root = root.resolve()
    discovery = Discovery()
    img_dirs: dict[str, Path] = {}
    skipped: set[Path] = set()
    for layout in layouts:
        folder, problem = _img_dir(root, layout)
        if problem:
            discovery.refused.append((layout.id, problem))
            logger.warning("warning: %s: layout %r: %s", root, layout.id, problem)
        elif folder is not None:
            img_dirs[layout.id] = folder

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

    claimed: set[Path] = set()
    for layout in layouts:
        found: list[Path] = []
        for name in layout.images or []:
            listed = Path(name)
            path = listed if listed.is_absolute() else root / listed
            found.append(path)
            if not _is_file(path):
                discovery.not_found.append((layout.id, path))
        if layout.id in img_dirs:
            under = [p for p in img_dirs[layout.id].rglob("*") if is_image_file(p) and _inside(p, real_root)]
            skipped.update(p.resolve() for p in under if _skipped(p, skip))
            found += sorted((p for p in under if not _skipped(p, skip)), key=natural_key)
        found += top_level.get(layout.id, [])
        folder = root / layout.id
        if _is_dir(folder):
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
    claimed |= skipped
    discovery.orphans = sorted((p for p in unclaimed if p.resolve() not in claimed), key=natural_key)
    return discovery
