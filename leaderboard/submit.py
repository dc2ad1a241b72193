"""Keep a submitted result file in ``leaderboard/results/`` so that rebuilding shows it.

A result file names its rows' ``scores_file`` and ``layouts_file`` relative to itself, so
copying the JSON alone would break the row pages. ``add_result`` copies the result file into
its own folder together with those files and rewrites the paths to the copies.
``images_root`` is not copied (candidate images are large); it is rewritten to point from the
new place to the same folder, so row pages still find the images on the machine that ran the
study (elsewhere the pages show a note instead of thumbnails).

Example:
    >>> import json, tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "run" / "gligen").mkdir(parents=True)
    >>> _ = (tmp / "run" / "gligen" / "scores.jsonl").write_text("")
    >>> _ = (tmp / "run" / "result.json").write_text(json.dumps({
    ...     "schema": "clis.bench/1", "study": "compare", "metrics": [],
    ...     "rows": [{"name": "gligen", "scores_file": "gligen/scores.jsonl"}]}))
    >>> kept = add_result(tmp / "run" / "result.json", tmp / "results")
    >>> kept.relative_to(tmp).as_posix()
    'results/compare-run/result.json'
    >>> json.loads(kept.read_text())["rows"][0]["scores_file"]
    'gligen/scores.jsonl'
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from leaderboard.schema import ResultFileError, load_result, read_json
from leaderboard.table import slugify


def _relative(target: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows): only an absolute path can reach it
        return target.resolve().as_posix()


def add_result(path: Path | str, results_dir: Path | str, name: str | None = None, replace: bool = False) -> Path:
    """Copy a result file (and the scores/layouts files its rows name) into ``results_dir``.

    Returns the kept result file, ``<results_dir>/<study>-<name>/result.json``; ``name``
    defaults to the folder the result file sits in. An existing submission of the same name
    is an error unless ``replace`` is true.
    """
    path = Path(path)
    result = load_result(path)  # refuses other schema versions and invalid files
    raw = read_json(path)
    label = name or (path.parent.name if path.stem == "result" else path.stem) or "result"
    dest = Path(results_dir) / slugify(f"{result.study}-{label}", "result")
    if dest.exists() and not replace:
        raise ResultFileError(f"{dest}: a submission of this name is already kept (pass --replace or --name)")
    # Every named file must exist before anything is written, so a refused submission leaves
    # no half-copied folder behind that would block the corrected retry.
    for index, row in enumerate(result.rows):
        for key in ("scores_file", "layouts_file"):
            source = result.resolve(getattr(row, key))
            if source is not None and not source.is_file():
                raise ResultFileError(f"{path}: rows[{index}] ({row.name!r}): {key}: {source} not found")
    # Build the submission beside its final place, then swap it in with one rename.
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=results_dir))
    try:
        _copy_submission(result, raw, staging, dest)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest / "result.json"


def _copy_submission(result, raw: dict, staging: Path, dest: Path) -> None:
    """Copy the files the rows name into ``staging`` and write the rewritten result there.

    Image folders are not copied; their paths are rewritten relative to ``dest``, where the
    submission will live.
    """
    copied: dict[Path, str] = {}
    for index, (row, raw_row) in enumerate(zip(result.rows, raw["rows"])):
        for key in ("scores_file", "layouts_file"):
            source = result.resolve(getattr(row, key))
            if source is None:
                continue
            resolved = source.resolve()
            if resolved not in copied:
                # Keep the file's path below the result file where it has one; else its name.
                relative = Path(getattr(row, key))
                kept = relative if not relative.is_absolute() and ".." not in relative.parts else Path(source.name)
                while kept.as_posix() in copied.values() or kept.name == "result.json":
                    kept = kept.with_name(f"{index}-{kept.name}")
                (staging / kept).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, staging / kept)
                copied[resolved] = kept.as_posix()
            raw_row[key] = copied[resolved]
        images = result.resolve(row.images_root)
        if images is not None:
            raw_row["images_root"] = _relative(images, dest)
    (staging / "result.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
