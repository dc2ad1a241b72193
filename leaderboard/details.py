"""What a row page shows beyond the table: candidates, per-instance scores and distributions.

A row of a result file may name the ``scores.jsonl`` it was computed from (``scores_file``),
the layouts (``layouts_file``) and the folder the candidate images sit in (``images_root``),
all relative to the result file. Each is optional: what cannot be found becomes a note on the
page, never a failed build.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the build runs headless; no display backend may be tried

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import MatplotlibDeprecationWarning, colormaps  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError  # noqa: E402

from clis import jsonio  # noqa: E402
from clis.files import is_inside  # noqa: E402
from clis.jsonio import finite_number  # noqa: E402
from leaderboard.schema import BenchResult, ResultRow  # noqa: E402

# Red (0) -> yellow -> green (100): a box's colour reads as bad/good at a glance.
SCORE_CMAP = "RdYlGn"
UNSCORED_COLOUR = (150, 150, 150)
THUMBNAIL_SIDE = 320
CANDIDATE_SCORES = ("clis", "clis_i", "clis_l", "global")


def score_colour(score: float | None) -> tuple[int, int, int]:
    """RGB colour of an instance score on 0..100 (grey when the instance has no score)."""
    if score is None or not math.isfinite(score):
        return UNSCORED_COLOUR
    r, g, b, _ = colormaps[SCORE_CMAP](min(max(score, 0.0), 100.0) / 100.0)
    return (round(r * 255), round(g * 255), round(b * 255))


@dataclass
class Candidate:
    """One scored candidate image (a line of ``scores.jsonl``)."""

    line: int
    layout_id: str
    image: str
    scores: dict[str, float | None]
    instances: list[dict[str, Any]]
    error: str | None

    @property
    def clis(self) -> float | None:
        return self.scores.get("clis")


@dataclass
class ScoresFile:
    candidates: list[Candidate] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _add_candidate(out: ScoresFile, record: Any, where: str, number: int) -> None:
    """Add one record as a candidate, or a problem naming ``where`` and the field."""
    if not isinstance(record, dict):
        out.problems.append(f"{where}: not a JSON object")
        return
    image = record.get("image")
    if not isinstance(image, str):
        out.problems.append(f"{where}: field 'image' is missing or not a string")
        return
    instances = record.get("instances") or []
    if not isinstance(instances, list):
        out.problems.append(f"{where}: field 'instances' is not a list")
        instances = []
    out.candidates.append(
        Candidate(
            line=number,
            layout_id=str(record.get("layout_id", "")),
            image=image,
            scores={key: finite_number(record.get(key)) for key in CANDIDATE_SCORES},
            instances=[i for i in instances if isinstance(i, dict)],
            error=record.get("error") if isinstance(record.get("error"), str) else None,
        )
    )


def read_scores(path: Path) -> ScoresFile:
    """Read ``scores.jsonl``; a bad line becomes a problem naming the file, the line and the field.

    A Parquet scores file (``clis.scoretable``) is read by row: ``Candidate.line`` is then its
    row number. One that is not a scores table, or a row it cannot decode, raises ``InputError``.
    A file that is not a regular file of a sane size (``clis.jsonio.check_input_file``) raises
    ``InputError``; one that is not UTF-8 raises ``UnicodeDecodeError``.
    """
    from clis.scoretable import is_parquet, iter_parquet_rows

    jsonio.check_input_file(path, "scores file")
    out = ScoresFile()
    if is_parquet(path):
        for number, record in iter_parquet_rows(path):
            _add_candidate(out, record, f"{path.name}: row {number}", number)
        return out
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            where = f"{path.name}: line {number}"
            try:
                record = jsonio.loads(text)
            except json.JSONDecodeError as exc:
                out.problems.append(f"{where}: not valid JSON ({exc.msg})")
                continue
            except jsonio.JSONError as exc:  # NaN, 1e309, nested too deeply, a 5,000-digit integer
                out.problems.append(f"{where}: {exc}")
                continue
            _add_candidate(out, record, where, number)
    return out


def pick_best_and_worst(candidates: list[Candidate], k: int) -> tuple[list[Candidate], list[Candidate]]:
    """The ``k`` highest- and ``k`` lowest-CLIS candidates; failed or unscored ones are skipped.

    With fewer than ``2k`` scored candidates the worst list holds only those not already shown
    as best, so no candidate appears twice.
    """
    scored = [c for c in candidates if c.clis is not None and c.error is None]
    ranked = sorted(scored, key=lambda c: (-c.clis, c.line))
    best = ranked[:k]
    rest = ranked[len(best):]
    worst = list(reversed(rest))[:k]
    return best, worst


def resolve_image(image: str, result: BenchResult, row: ResultRow, scores_path: Path | None) -> Path | None:
    """Find a candidate image file under ``images_root``, or beside the scores or result file.

    A path that resolves outside those folders (``/home/me/private.png``, ``../../x.png``, a
    link out of them) is not shown: a submitted scores file must not put any image of the
    builder's machine on a published page."""
    bases = []
    root = result.resolve(row.images_root)
    if root is not None:
        bases.append(root)
    if scores_path is not None:
        bases.append(scores_path.parent)
    if result.source is not None:
        bases.append(result.source.parent)

    def inside(candidate: Path) -> bool:
        return candidate.is_file() and any(is_inside(candidate, base) for base in bases)

    path = Path(image)
    if path.is_absolute():
        return path if inside(path) else None
    for base in bases:
        if inside(base / path):
            return base / path
        # images_root may already be the folder that `image` names (".../images" + "images/x.png").
        if len(path.parts) > 1 and inside(base / Path(*path.parts[1:])):
            return base / Path(*path.parts[1:])
    return None


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_candidate(image_path: Path, instances: list[dict[str, Any]], out_path: Path, side: int = THUMBNAIL_SIDE) -> None:
    """Save ``image_path`` scaled to ``side`` pixels on its long side, every instance box drawn in its score's colour."""
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    # Fit the long side to `side` both ways: small candidates (64 px test or draft renders) are
    # enlarged so that box tags stay readable next to large ones.
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    width, height = image.size
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(width, height) / 80))
    font = _font(max(10, round(min(width, height) / 22)))
    for instance in instances:
        bbox = instance.get("bbox")
        numbers = [finite_number(v) for v in bbox] if isinstance(bbox, list) else []
        if len(numbers) != 4 or None in numbers:
            continue
        x, y, w, h = numbers
        box = (x * width, y * height, (x + w) * width - 1, (y + h) * height - 1)
        score = finite_number(instance.get("score"))
        colour = score_colour(score)
        draw.rectangle(box, outline=colour, width=line)
        tag = f"{instance.get('label', '')} {score:.0f}" if score is not None else f"{instance.get('label', '')}"
        left, top = box[0] + line, box[1] + line
        text_box = draw.textbbox((left, top), tag, font=font)
        draw.rectangle(text_box, fill=colour)
        draw.text((left, top), tag, fill=(0, 0, 0), font=font)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.save(out_path)


def instance_frame(candidates: list[Candidate]) -> pd.DataFrame:
    """Every instance of every candidate as one flat record."""
    records = []
    for candidate in candidates:
        for instance in candidate.instances:
            detection = instance.get("detection") if isinstance(instance.get("detection"), dict) else {}
            records.append(
                {
                    "layout_id": candidate.layout_id,
                    "image": candidate.image,
                    "object_id": str(instance.get("object_id", "")),
                    "label": str(instance.get("label", "")),
                    "phrase": str(instance.get("phrase", "")),
                    "region": finite_number(instance.get("region")),
                    "grounding": finite_number(instance.get("grounding")),
                    "detection_found": detection.get("found") if isinstance(detection.get("found"), bool) else None,
                    "detection_iou": finite_number(detection.get("iou")),
                    "score": finite_number(instance.get("score")),
                    "candidate_clis": candidate.clis,
                }
            )
    columns = [
        "layout_id", "image", "object_id", "label", "phrase", "region", "grounding",
        "detection_found", "detection_iou", "score", "candidate_clis",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def _save_figure(fig: plt.Figure, out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_row_distributions(
    candidates: list[Candidate], instances: pd.DataFrame, out_path: Path, min_instance: float | None = None
) -> bool:
    """Histograms of candidate scores (CLIS, CLIS-I, CLIS-L) and of instance scores.

    Returns False (and writes nothing) when there is no score to plot.
    """
    long = pd.DataFrame(
        [
            {"score": c.scores[key], "kind": key.replace("_", "-").upper()}
            for c in candidates
            for key in ("clis", "clis_i", "clis_l")
            if c.scores.get(key) is not None
        ],
        columns=["score", "kind"],
    )
    instance_scores = instances["score"].dropna() if not instances.empty else pd.Series(dtype=float)
    if long.empty and instance_scores.empty:
        return False
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    if not long.empty:
        sns.histplot(data=long, x="score", hue="kind", element="step", binwidth=5, binrange=(0, 100), ax=axes[0])
    axes[0].set(title="Candidate scores", xlabel="score (0..100)", ylabel="candidates", xlim=(0, 100))
    if not instance_scores.empty:
        sns.histplot(x=instance_scores, binwidth=5, binrange=(0, 100), color="#4c72b0", ax=axes[1])
        if min_instance is not None:
            axes[1].axvline(min_instance, color="#c44e52", linestyle="--", label=f"instance threshold {min_instance:g}")
            axes[1].legend(loc="upper left")
    axes[1].set(title="Instance scores", xlabel="score (0..100)", ylabel="instances", xlim=(0, 100))
    _save_figure(fig, out_path)
    return True


def plot_board_distributions(per_row: dict[str, list[Candidate]], out_path: Path) -> bool:
    """Candidate CLIS of every row side by side (box plot); False when no row has scores."""
    frame = pd.DataFrame(
        [{"row": name, "CLIS": c.clis} for name, cands in per_row.items() for c in cands if c.clis is not None],
        columns=["row", "CLIS"],
    )
    if frame.empty:
        return False
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(8, 0.6 * frame["row"].nunique() + 1.4))
    with warnings.catch_warnings():
        # seaborn 0.13 passes matplotlib's deprecated `vert` to bxp; nothing for us to change.
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        sns.boxplot(data=frame, x="CLIS", y="row", hue="row", legend=False, ax=ax)
    ax.set(title="Candidate CLIS per row", xlabel="CLIS (0..100)", ylabel="", xlim=(0, 100))
    _save_figure(fig, out_path)
    return True


def load_thumbnail_safe(image_path: Path, instances: list[dict[str, Any]], out_path: Path) -> str | None:
    """``draw_candidate`` that returns a one-line problem instead of raising on a broken image."""
    try:
        draw_candidate(image_path, instances, out_path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"{image_path.name}: cannot be drawn ({exc.__class__.__name__}: {exc})"
    return None
