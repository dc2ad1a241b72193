"""Keep a submitted result file in ``leaderboard/results/`` so that rebuilding shows it.

A result file names its rows' ``scores_file`` and ``layouts_file`` relative to itself, so
copying the JSON alone would break the row pages. ``add_result`` copies the result file into
its own folder together with those files and rewrites the paths to the copies.
``images_root`` is not copied (candidate images are large); it is rewritten to point from the
new place to the same folder, so row pages still find the images on the machine that ran the
study (elsewhere the pages show a note instead of thumbnails).

A result file may come from anyone, and the results folder is usually inside the source tree:
only files under the result file's own folder (links resolved) are copied, and only of the
kinds a submission carries (``SUBMITTED_KINDS``). Anything else refuses the whole submission
before the first copy.

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

from clis import jsonio
from clis.errors import InputError
from leaderboard.schema import BenchResult, ResultFileError, load_result, read_json
from leaderboard.table import slugify

# What a row may bring along, by field: the suffix its file must have and what it must hold.
# Candidate images are not copied (``images_root`` is only rewritten), so nothing else is.
SUBMITTED_KINDS = {
    "scores_file": (".jsonl", "a scores file (JSON lines, as `clis score` writes)"),
    "layouts_file": (".json", "a layouts file (JSON)"),
}


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
    if dest.exists() and not dest.is_dir():
        raise ResultFileError(f"{dest}: exists and is not a kept submission (a folder); remove it or pass --name")
    if dest.exists() and not replace:
        raise ResultFileError(f"{dest}: a submission of this name is already kept (pass --replace or --name)")
    # Every named file is checked before anything is written, so a refused submission leaves
    # no half-copied folder behind that would block the corrected retry.
    sources = {
        (index, key): _submitted_file(result, path, index, row.name, key, getattr(row, key))
        for index, row in enumerate(result.rows)
        for key in SUBMITTED_KINDS
    }
    # Build the submission beside its final place, then swap it in with one rename.
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=results_dir))
    try:
        _copy_submission(result, raw, sources, staging, dest)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest / "result.json"


def _submitted_file(
    result: BenchResult, path: Path, index: int, name: str, key: str, written: str | None
) -> tuple[Path, Path] | None:
    """The checked file a row's ``key`` names, as ``(resolved path, its path below the submission)``.

    Refused: a path that leads out of the result file's folder (absolute, ``..``, or a link to
    a file elsewhere), a file that is missing, not regular or too large, and one that is not
    of its field's kind (suffix and content).
    """
    source = result.resolve(written)
    if source is None:
        return None
    where = f"{path}: rows[{index}] ({name!r}): {key}"
    folder = path.parent.resolve()
    resolved = source.resolve()
    if not resolved.is_relative_to(folder):
        leads = f" (it leads to {resolved})" if Path(written) != resolved else ""
        raise ResultFileError(
            f"{where}: {written} is outside the result file's folder {folder}{leads}; a submission carries "
            "only files under it: copy the file there and name it relative to the result file"
        )
    suffix, kind = SUBMITTED_KINDS[key]
    if resolved.suffix.lower() != suffix:
        raise ResultFileError(f"{where}: {written} is not {kind}: expected a {suffix} file")
    if not source.exists():
        raise ResultFileError(f"{where}: {source} not found")
    try:
        text = jsonio.read_text(resolved, key.replace("_", " "))
    except InputError as exc:
        raise ResultFileError(f"{where}: {exc}") from None
    problem = _kind_problem(key, text)
    if problem:
        raise ResultFileError(f"{where}: {written} is not {kind} ({problem})")
    return resolved, resolved.relative_to(folder)


def _kind_problem(key: str, text: str) -> str | None:
    """Why ``text`` is not what a row's ``key`` names, or None."""
    if key == "scores_file":
        # Its first record tells a scores file; the rest is read (and reported) by `build`.
        first = next((line for line in text.splitlines() if line.strip()), None)
        if first is None:
            return None  # empty: a run that scored nothing yet
        text, wanted, shape = first, dict, "its first line is not a JSON object"
    else:
        wanted, shape = (list, dict), "not a JSON list or object"
    try:
        value = jsonio.loads(text)
    except json.JSONDecodeError as exc:
        at = "its first line" if key == "scores_file" else f"line {exc.lineno}"
        return f"{at}: {exc.msg}"
    except jsonio.JSONError as exc:  # NaN, 1e309, nested too deeply, a 5,000-digit integer
        return str(exc)
    return None if isinstance(value, wanted) else shape


def _copy_submission(result: BenchResult, raw: dict, sources: dict, staging: Path, dest: Path) -> None:
    """Copy the checked files (``sources``, from ``_submitted_file``) into ``staging`` and write
    the rewritten result there.

    Image folders are not copied; their paths are rewritten relative to ``dest``, where the
    submission will live.
    """
    copied: dict[Path, str] = {}
    for index, (row, raw_row) in enumerate(zip(result.rows, raw["rows"])):
        for key in SUBMITTED_KINDS:
            if sources[index, key] is None:
                continue
            resolved, kept = sources[index, key]
            if resolved not in copied:
                # The file keeps its path below the result file, which never climbs out.
                while kept.as_posix() in copied.values() or kept.name == "result.json":
                    kept = kept.with_name(f"{index}-{kept.name}")
                (staging / kept).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(resolved, staging / kept)
                copied[resolved] = kept.as_posix()
            raw_row[key] = copied[resolved]
        images = result.resolve(row.images_root)
        if images is not None:
            raw_row["images_root"] = _relative(images, dest)
    (staging / "result.json").write_text(jsonio.dumps(raw, indent=2) + "\n", encoding="utf-8")
