"""Tests of the leaderboard: result-file reading, tables, exports, row pages, escaping, CLI.

Result files here are written by hand with known numbers, so every expected value below is
worked out from the inputs, not read back from the builder.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import clis.cli
from leaderboard.config import LeaderboardConfig
from leaderboard.details import Candidate, pick_best_and_worst
from leaderboard.exports import boards_to_markdown, escape_markdown
from leaderboard.schema import ResultFileError, load_result
from leaderboard.site import build_site

MALICIOUS = "<script>alert(1)</script>"

# name -> (CLIS mean, CI low, CI high, CLIS-I mean); intervals None where the row has none.
# The CLIS-I order (gligen, MALICIOUS, instdiff) is neither the CLIS order nor its reverse, so
# a sorter that merely reverses rows on a click cannot pass the browser test.
GENERATORS = {
    "gligen": (61.2, 58.9, 63.4, 70.5),
    "instdiff": (66.0, 63.1, 68.8, 64.25),
    MALICIOUS: (50.5, None, None, 67.0),
}
METRICS = [
    {"key": "clis_mean", "label": "CLIS (mean)", "description": "mean CLIS over candidates", "higher_is_better": True},
    {"key": "clis_i_mean", "label": "CLIS-I (mean)", "description": "mean CLIS-I over candidates"},
]
# gligen's candidates: (image file, solid colour, CLIS, instance score). The box of the only
# instance covers the middle of the image, [0.25, 0.25, 0.5, 0.5].
CANDIDATES = [
    ("a/0.png", (10, 20, 200), 90.0, 100.0),
    ("a/1.png", (200, 200, 20), 10.0, 0.0),
    ("a/2.png", (30, 160, 160), 50.0, 55.0),
    ("a/3.png", (120, 40, 90), 70.0, 80.0),
]
BOX = [0.25, 0.25, 0.5, 0.5]
# Nested provenance as benchmarks write it: the layout scorer's whole manifest under
# models.layout, and the scorer's manifest (fingerprints, weights, settings) as `scorer`.
LAYOUT_MANIFEST = {
    "metric": "clis_l",
    "llm": {"spec": "hf:tiny/lm", "sha256": "cd" * 32, "files": {"model.safetensors": "cd" * 32}},
    "prompts": {"vertical_templates": ["The {upper} is above the {lower}.", MALICIOUS]},
}
NESTED_MODELS = {"image_model": "hf:openai/clip-vit-base-patch32", "detector": MALICIOUS, "layout": LAYOUT_MANIFEST}
SCORER = {
    "tool": "clis", "version": "0.1.0",
    "models": {"image_model": {"spec": "hf:openai/clip-vit-base-patch32", "sha256": "ef" * 32}, "detector": None,
               "layout": LAYOUT_MANIFEST},
    "weights": {"clis": {"image": 0.5, "layout": 0.5}, "layout_score_used": True},
    "settings": {MALICIOUS: {"margin": 0.1}},
    "truncated_texts": [],
}
# gligen's scores were made with other models than the run's (a row read from its own scores file).
GLIGEN_MODELS = {"image_model": "hf:other/clip", "layout": {"llm": {"spec": "hf:tiny/other-lm"}}}


def scores_line(layout_id: str, image: str, clis: float | None, instance_score: float | None, label: str = "cup") -> str:
    instance = {
        "object_id": "cup-1", "label": label, "phrase": f"red {label}", "bbox": BOX,
        "region": 30.0, "grounding": 70.0,
        "detection": {"found": True, "iou": 0.7, "score": 0.5, "count": 1, "expected_count": 1, "count_match": True},
        "score": instance_score,
    }
    return json.dumps({
        "layout_id": layout_id, "image": image, "clis": clis, "clis_i": clis, "clis_l": clis, "global": 30.0,
        "instances": [instance], "error": None,
    })


def result_document(rows: list[dict], study: str = "compare", metrics: list[dict] | None = None, **extra) -> dict:
    return {
        "schema": "clis.bench/1", "study": study, "clis_version": "0.1.0", "created": "2026-11-25T10:00:00+00:00",
        "inputs": [{"role": "scores", "name": "gligen", "path": "gligen/scores.jsonl", "sha256": "ab" * 32}],
        "models": {"image_model": "hf:openai/clip-vit-base-patch32", "detector": MALICIOUS},
        "settings": {"bootstrap": 1000, "seed": 0, "confidence": 0.95, "min_instance": 60, "min_layout": 50},
        "metrics": metrics if metrics is not None else METRICS,
        "rows": rows,
        **extra,
    }


def generator_row(name: str) -> dict:
    clis_mean, low, high, clis_i = GENERATORS[name]
    return {
        "name": name, "n_images": 4, "n_layouts": 2,
        "values": {"clis_mean": {"value": clis_mean, "ci_low": low, "ci_high": high},
                   "clis_i_mean": {"value": clis_i, "ci_low": None, "ci_high": None}},
    }


def write_bench(root: Path) -> Path:
    """A compare result: gligen with scores, layouts and images; instdiff whose scores file is
    missing; a maliciously named generator with no scores file at all."""
    images = root / "candidates" / "gligen"
    lines = []
    for i, (image, colour, clis, instance_score) in enumerate(CANDIDATES):
        (images / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(images / image)
        lines.append(scores_line(f"L{i % 2}", image, clis, instance_score, label=MALICIOUS if i == 0 else "cup"))
    lines.append(json.dumps({"layout_id": "L0", "image": "a/9.png", "clis": None, "clis_i": None, "clis_l": None,
                             "global": None, "instances": [], "error": "image could not be read"}))
    (root / "bench" / "gligen").mkdir(parents=True)
    (root / "bench" / "gligen" / "scores.jsonl").write_text("\n".join(lines) + "\n")
    layouts = [
        {"id": f"L{i}", "caption": f"a red cup {MALICIOUS} {i}",
         "objects": [{"id": "cup-1", "label": MALICIOUS, "bbox": BOX}]}
        for i in range(2)
    ]
    (root / "bench" / "layouts.json").write_text(json.dumps(layouts))
    gligen = generator_row("gligen") | {
        "scores_file": "gligen/scores.jsonl", "layouts_file": "layouts.json", "images_root": "../candidates/gligen",
        "models": GLIGEN_MODELS,
    }
    instdiff = generator_row("instdiff") | {"scores_file": "instdiff/scores.jsonl", "models": NESTED_MODELS}
    path = root / "bench" / "result.json"
    document = result_document([gligen, instdiff, generator_row(MALICIOUS)], models=NESTED_MODELS, scorer=SCORER)
    path.write_text(json.dumps(document, indent=2))
    return path


class TableReader(HTMLParser):
    """Collect the text of every table's header and body cells, and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, list]] = []
        self.links: list[str] = []
        self.scripts: list[dict] = []
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.links.append(attrs[key])
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "table":
            self.tables.append({"id": attrs.get("id"), "caption": "", "head": [], "rows": []})
        elif tag == "caption":
            self._caption = []
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self.tables and not self._in_head:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "caption" and self._caption is not None and self.tables:
            self.tables[-1]["caption"] = " ".join("".join(self._caption).split())
            self._caption = None
        if tag in ("td", "th") and self._cell is not None and self.tables:
            text = " ".join("".join(self._cell).split())
            target = self.tables[-1]["head"] if self._in_head else self.tables[-1]["rows"][-1]
            target.append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._caption is not None:
            self._caption.append(data)


def read_html(path: Path) -> TableReader:
    reader = TableReader()
    reader.feed(path.read_text(encoding="utf-8"))
    return reader


def kv_tables(path: Path) -> dict[str, dict[str, str]]:
    """Every key/value table of a page (models, settings, scorer) by caption: ``{key: value}``."""
    return {t["caption"]: {row[0]: row[1] for row in t["rows"]} for t in read_html(path).tables if t["caption"]}


def assert_no_raw_dicts(text: str) -> None:
    """Provenance must never be printed as Python's ``str(dict)``, escaped or not."""
    for raw in ("{'", "{&#39;", "{&#x27;", "{&apos;", "None", "True", "False"):
        assert raw not in text, raw


def board_table(path: Path, study: str = "compare") -> dict:
    return next(t for t in read_html(path).tables if t["id"] == f"board-{study}")


def split_markdown_row(line: str) -> list[str]:
    """Cells of a Markdown table row; ``\\|`` is a literal pipe, not a separator."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [cell.strip() for cell in cells]


def unescape_markdown(text: str) -> str:
    text = re.sub(r"\\(.)", r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def markdown_table(markdown: str, study: str = "compare") -> tuple[list[str], list[list[str]]]:
    section = markdown.split(f"## {study}\n", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = split_markdown_row(lines[0])
    rows = [split_markdown_row(line) for line in lines[2:]]
    return header, rows


@pytest.fixture()
def bench(tmp_path: Path) -> Path:
    return write_bench(tmp_path)


@pytest.fixture()
def site(bench: Path, tmp_path: Path):
    return build_site([bench], tmp_path / "site", LeaderboardConfig(thumbnails=2))


# --- the table ---------------------------------------------------------------------------


def test_table_default_sort_is_clis_descending(site):
    table = board_table(site.index)
    names = [row[1] for row in table["rows"]]
    expected = sorted(GENERATORS, key=lambda n: GENERATORS[n][0], reverse=True)
    assert names == expected == ["instdiff", "gligen", MALICIOUS]
    assert [row[0] for row in table["rows"]] == ["1", "2", "3"]
    assert table["head"][:4] == ["#", "Name", "Images", "Layouts"]
    assert table["head"][4:] == ["CLIS (mean) ↑", "CLIS-I (mean) ↑"]


def test_table_shows_values_with_bootstrap_intervals(site):
    rows = {row[1]: row for row in board_table(site.index)["rows"]}
    assert rows["gligen"][4] == "61.20 [58.90, 63.40]"
    assert rows["instdiff"][4] == "66.00 [63.10, 68.80]"
    assert rows[MALICIOUS][4] == "50.50"  # null interval: the value alone
    assert rows["instdiff"][5] == "64.25"


def test_lower_is_better_metric_sorts_ascending(tmp_path):
    metrics = [{"key": "error_rate", "label": "Error", "higher_is_better": False}]
    rows = [{"name": n, "values": {"error_rate": {"value": v}}} for n, v in [("a", 0.3), ("b", 0.1), ("c", 0.2)]]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result_document(rows, metrics=metrics)))
    report = build_site([path], tmp_path / "site", LeaderboardConfig(sort_by=["error_rate"]))
    assert [r[1] for r in board_table(report.index)["rows"]] == ["b", "c", "a"]


def test_metric_definitions_and_provenance_are_on_the_index(site):
    text = site.index.read_text()
    assert "mean CLIS over candidates" in text and "mean CLIS-I over candidates" in text
    tables = kv_tables(site.index)
    settings = tables["Settings"]
    assert settings["bootstrap"] == "1000" and settings["seed"] == "0" and settings["confidence"] == "0.95"
    assert tables["Models"]["image_model"] == "hf:openai/clip-vit-base-patch32"
    assert "0.1.0" in text  # the clis version of the run
    assert "ab" * 32 in text  # input checksum


def test_nested_provenance_is_shown_as_dotted_key_rows(site):
    tables = kv_tables(site.index)
    models = tables["Models"]
    assert models["detector"] == MALICIOUS  # the parser unescapes: the page holds it escaped
    assert models["layout.metric"] == "clis_l" and models["layout.llm.spec"] == "hf:tiny/lm"
    assert models['layout.llm.files["model.safetensors"]'] == "cd" * 32  # a dot in a key is quoted
    assert json.loads(models["layout.prompts.vertical_templates"]) == LAYOUT_MANIFEST["prompts"]["vertical_templates"]
    scorer = tables["Scorer"]
    assert scorer["tool"] == "clis" and scorer["models.image_model.sha256"] == "ef" * 32
    assert scorer["models.detector"] == "null" and scorer["models.layout.llm.spec"] == "hf:tiny/lm"
    assert scorer["weights.clis.layout"] == "0.5" and scorer["weights.layout_score_used"] == "true"
    assert scorer[f"settings.{MALICIOUS}.margin"] == "0.1" and scorer["truncated_texts"] == "[]"
    # A row whose scores were made with other models shows them; one with the run's models does not.
    assert tables["Models of gligen"] == {"image_model": "hf:other/clip", "layout.llm.spec": "hf:tiny/other-lm"}
    assert "Models of instdiff" not in tables
    text = site.index.read_text()
    assert re.search(r"<details[^>]*>\s*<summary>Scorer manifest[^<]*\(\d+ entries\)</summary>\s*<table class=\"kv\">\s*<caption>Scorer<", text)
    gligen = kv_tables(page_for(site, "gligen"))
    assert gligen["Models of this row (from its scores file's manifest)"]["layout.llm.spec"] == "hf:tiny/other-lm"
    assert gligen["Scorer"] == scorer and "Models of gligen" not in gligen
    assert not any(caption.startswith("Models of") for caption in kv_tables(page_for(site, "instdiff")))
    for page in [site.index, *site.pages]:
        assert_no_raw_dicts(page.read_text())


def test_scorer_must_be_an_object_or_null(tmp_path):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result_document([generator_row("gligen")], scorer=None)))
    assert load_result(path).scorer is None
    path.write_text(json.dumps(result_document([generator_row("gligen")], scorer="clis 0.1.0")))
    with pytest.raises(ResultFileError, match=r"result.json: scorer: "):
        load_result(path)


def test_a_differing_nested_setting_is_named(tmp_path):
    paths = []
    for i, llm in enumerate(["hf:tiny/lm", "hf:big/lm"]):
        rows = [{"name": f"g{i}", "values": {"clis_mean": {"value": 50.0 + i}}}]
        document = result_document(rows, settings={"seed": 0, "layout": {"llm": llm, "batch_size": 8}})
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(document))
    report = build_site(paths, tmp_path / "site")
    assert report.boards[0].notes == ["rows come from runs with different settings (layout.llm); compare them with care"]


def test_studies_get_separate_tables(tmp_path, bench):
    other = tmp_path / "correlate.json"
    metrics = [{"key": "spearman", "label": "Spearman ρ"}]
    rows = [{"name": "clis", "values": {"spearman": {"value": 0.41, "ci_low": 0.2, "ci_high": 0.6}}}]
    other.write_text(json.dumps(result_document(rows, study="correlate", metrics=metrics)))
    report = build_site([other, bench], tmp_path / "site")
    assert [b.study for b in report.boards] == ["compare", "correlate"]  # compare first
    assert [r[1] for r in board_table(report.index, "correlate")["rows"]] == ["clis"]
    assert len(board_table(report.index, "compare")["rows"]) == 3


def _study_section(index: Path, study: str) -> str:
    text = index.read_text(encoding="utf-8")
    return text.split(f'id="study-{study}"', 1)[1].split("<table", 1)[0]


def _name_cells(index: Path, study: str) -> dict[str, str]:
    """Row name -> the HTML of its name cell, in one study's table."""
    table = index.read_text(encoding="utf-8").split(f'id="board-{study}"', 1)[1].split("</table>", 1)[0]
    cells = re.findall(r'<td class="name" data-value="([^"]*)">(.*?)</td>', table)
    return dict(cells)


def test_study_headings_say_what_the_rows_are(tmp_path, bench):
    corrupt = tmp_path / "corrupt.json"
    metrics = [{"key": "accuracy", "label": "accuracy (all kinds)"}]
    rows = [{"name": name, "values": {"accuracy": {"value": v}}} for name, v in (("clis", 0.8), ("global", 0.6))]
    corrupt.write_text(json.dumps(result_document(rows, study="corrupt", metrics=metrics)))
    layouts = tmp_path / "layouts.json"
    metrics = [{"key": "win_rate", "label": "win rate (all)"}]
    rows = [{"name": name, "values": {"win_rate": {"value": v}}} for name, v in (("clis_l", 0.7), ("llm", 0.6))]
    layouts.write_text(json.dumps(result_document(rows, study="layouts", metrics=metrics)))
    report = build_site([corrupt, layouts, bench], tmp_path / "site")
    compare_part, corrupt_part = _study_section(report.index, "compare"), _study_section(report.index, "corrupt")
    assert "Generators ranked by CLIS" in compare_part
    assert "ranked by CLIS" not in corrupt_part and "generators ranked" not in corrupt_part.lower()
    assert "Sensitivity to corruptions" in corrupt_part and "Each row is a score, not a generator" in corrupt_part
    # The page's lede, above every study, does not claim that everything ranks generators.
    lede = report.index.read_text(encoding="utf-8").split('id="study-', 1)[0]
    assert "generators ranked by CLIS" not in lede.lower()
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "**Sensitivity to corruptions**" in markdown.split("## corrupt\n", 1)[1].split("## ", 1)[0]
    # The layouts study (no images): its own heading, not the plain "Study: layouts".
    layouts_part = _study_section(report.index, "layouts")
    assert "Real layouts against corrupted twins" in layouts_part and "Study: layouts" not in layouts_part
    assert "not a generator" in layouts_part and "flip, swap, scale, shift, random" in layouts_part
    assert "No images are needed" in layouts_part
    assert "**Real layouts against corrupted twins**" in markdown.split("## layouts\n", 1)[1].split("## ", 1)[0]


def test_demo_only_candidates_carry_a_badge_in_every_study(tmp_path, bench):
    # corrupt, on images made by the shapes generator: its generate manifest says demo_only.
    shapes = tmp_path / "shapes-images"
    shapes.mkdir()
    (shapes / "manifest.json").write_text(json.dumps({"generator": "shapes", "demo_only": True, "n": 1}))
    real = tmp_path / "photos"
    real.mkdir()
    (real / "manifest.json").write_text(json.dumps({"generator": "gligen", "demo_only": False}))
    metrics = [{"key": "accuracy", "label": "accuracy (all kinds)"}]
    rows = [{"name": name, "values": {"accuracy": {"value": v}}} for name, v in (("clis", 0.8), ("global", 0.6))]
    for folder, study_file in ((shapes, "corrupt-shapes.json"), (real, "corrupt-real.json")):
        document = result_document(rows, study="corrupt", metrics=metrics)
        document["inputs"] = [{"role": "images", "path": folder.name}, {"role": "layouts", "path": "layouts.json"}]
        (tmp_path / study_file).write_text(json.dumps(document))
    # compare: a row whose scores file's manifest (written by clis score) names the shapes generator.
    demo_scores = tmp_path / "demo" / "scores.jsonl"
    demo_scores.parent.mkdir()
    demo_scores.write_text(scores_line("L0", "a/0.png", 40.0, 50.0) + "\n")
    Path(f"{demo_scores}.manifest.json").write_text(
        json.dumps({"run": {"generation": {"generator": "shapes", "demo_only": True}}})
    )
    demo_row = {**generator_row("gligen"), "name": "toy", "scores_file": "demo/scores.jsonl"}
    (tmp_path / "compare-demo.json").write_text(json.dumps(result_document([demo_row])))
    report = build_site([tmp_path / "corrupt-shapes.json", tmp_path / "corrupt-real.json",
                         tmp_path / "compare-demo.json", bench], tmp_path / "site")

    corrupt_cells = _name_cells(report.index, "corrupt")
    badged = {name for name, cell in corrupt_cells.items() if "demo only" in cell}
    assert badged == {"clis (corrupt-shapes.json)", "global (corrupt-shapes.json)"}, corrupt_cells
    compare_cells = _name_cells(report.index, "compare")
    assert "demo only" in compare_cells["toy"]
    assert not any("demo only" in cell for name, cell in compare_cells.items() if name != "toy")
    page = next(p for p in report.pages if p.name.startswith("corrupt-clis-corrupt-shapes"))
    assert "demo only" in page.read_text() and "shapes" in page.read_text()
    frame = pd.read_csv(tmp_path / "site" / "leaderboard.csv")
    assert frame.loc[frame["name"] == "toy", "demo_only"].item() == True  # noqa: E712
    assert "toy (demo only)" in (tmp_path / "site" / "leaderboard.md").read_text()


def test_same_name_in_two_submissions_keeps_both_rows(tmp_path, bench):
    again = tmp_path / "resubmitted.json"
    again.write_text(json.dumps(result_document([generator_row("gligen")])))
    report = build_site([bench, again], tmp_path / "site")
    names = [r[1] for r in board_table(report.index)["rows"]]
    assert "gligen (result.json)" in names and "gligen (resubmitted.json)" in names
    assert len({p.name for p in report.pages}) == 4


# --- config ------------------------------------------------------------------------------


def test_config_chooses_metrics_and_their_order(bench, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"title": "My <b>board</b>", "metrics": ["clis_i_mean"], "sort_by": ["clis_i_mean"]}))
    result = clis_main(["leaderboard", "build", str(bench), "--out", str(tmp_path / "site"), "--config", str(config), "-q"])
    assert result == 0
    table = board_table(tmp_path / "site" / "index.html")
    assert table["head"][4:] == ["CLIS-I (mean) ↑"]
    assert [r[1] for r in table["rows"]] == ["gligen", MALICIOUS, "instdiff"]  # by CLIS-I: 70.5, 67, 64.25
    header, _ = markdown_table((tmp_path / "site" / "leaderboard.md").read_text())
    assert header[2:] == ["CLIS-I (mean) ↑"]
    assert "My &lt;b&gt;board&lt;/b&gt;" in (tmp_path / "site" / "index.html").read_text()


def test_bad_config_is_one_line_error(bench, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"title": "x", "decimals": "many"}))
    code = clis_main(["leaderboard", "build", str(bench), "--out", str(tmp_path / "site"), "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(config) in err and "decimals" in err


def test_adding_a_result_file_and_rebuilding_updates_the_board(tmp_path):
    kept = tmp_path / "results"
    kept.mkdir()
    (kept / "gligen.json").write_text(json.dumps(result_document([generator_row("gligen")])))
    (kept / "layouts.json").write_text("[]")  # not a result file: skipped when scanning the folder
    out = tmp_path / "site"
    assert clis_main(["leaderboard", "build", str(kept), "--out", str(out), "-q"]) == 0
    assert [r[1] for r in board_table(out / "index.html")["rows"]] == ["gligen"]
    (kept / "instdiff.json").write_text(json.dumps(result_document([generator_row("instdiff")])))
    assert clis_main(["leaderboard", "build", str(kept), "--out", str(out), "-q"]) == 0
    assert [r[1] for r in board_table(out / "index.html")["rows"]] == ["instdiff", "gligen"]
    (kept / "gligen.json").unlink()
    assert clis_main(["leaderboard", "build", str(kept), "--out", str(out), "-q"]) == 0
    assert sorted(p.name for p in (out / "rows").glob("*.html")) == ["compare-instdiff.html"]  # no stale page


def test_kept_results_and_config_in_the_package_are_valid():
    from leaderboard.config import DEFAULT_RESULTS_DIR, load_config
    from leaderboard.schema import collect_result_files

    from benchmarks.compare import FIGURES

    config = load_config()
    # The packaged config shows metrics that `clis bench compare` really writes.
    compare_keys = [key for key, *_ in FIGURES]
    assert config.metrics and set(config.metrics) <= set(compare_keys)
    assert config.sort_by[0] in compare_keys
    for path in collect_result_files([DEFAULT_RESULTS_DIR]):
        assert load_result(path).rows, path


# --- bad input ---------------------------------------------------------------------------


def clis_main(argv: list[str]) -> int:
    try:
        clis.cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_other_schema_version_is_a_clear_one_line_error(tmp_path, capsys):
    path = tmp_path / "future.json"
    path.write_text(json.dumps(result_document([generator_row("gligen")]) | {"schema": "clis.bench/2"}))
    code = clis_main(["leaderboard", "build", str(path), "--out", str(tmp_path / "site")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert str(path) in err and "'clis.bench/2'" in err and "clis.bench/1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "site").exists()  # nothing half-built


def test_other_schema_version_in_a_scanned_folder_is_refused(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"schema": "clis.bench/0", "study": "compare", "rows": []}))
    with pytest.raises(ResultFileError, match="clis.bench/0"):
        build_site([tmp_path], tmp_path / "site")


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["rows"][1]["values"]["clis_mean"].update(value="high"), ["rows[1] ('instdiff')", "values.clis_mean.value"]),
        (lambda d: d["rows"][0].pop("name"), ["rows[0]", "name"]),
        (lambda d: d["rows"][2]["values"].update(fid={"value": 3.0}), ["rows[2]", "values.fid", "not defined in 'metrics'"]),
        (lambda d: d.pop("metrics"), ["metrics", "required"]),
    ],
)
def test_invalid_field_names_file_record_and_field(tmp_path, capsys, mutate, expected):
    document = result_document([generator_row(n) for n in GENERATORS])
    mutate(document)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(document))
    code = clis_main(["leaderboard", "build", str(path), "--out", str(tmp_path / "site")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err
    for part in expected:
        assert part in err


def test_broken_json_and_missing_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "clis.bench/1", ')
    with pytest.raises(ResultFileError, match=r"broken.json: not valid JSON \(line 1"):
        load_result(broken)
    with pytest.raises(ResultFileError, match="nope.json: no such file"):
        load_result(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultFileError, match="no result files found"):
        build_site([tmp_path / "empty"], tmp_path / "site")


# --- exports -----------------------------------------------------------------------------


def test_markdown_export_matches_the_html_table(site):
    html = board_table(site.index)
    header, rows = markdown_table(site.exports["markdown"].read_text())
    assert header[0] == "#" and header[1] == "Name"
    assert header[2:] == html["head"][4:]
    assert len(rows) == len(html["rows"])
    for md_row, html_row in zip(rows, html["rows"]):
        assert md_row[0] == html_row[0]  # rank
        assert unescape_markdown(md_row[1]) == html_row[1]  # name, same order
        assert md_row[2:] == html_row[4:]  # every figure exactly as the HTML prints it
        numbers = [float(x) for cell in md_row[2:] for x in re.findall(r"-?\d+\.\d+", cell)]
        name = html_row[1]
        clis_mean, low, high, clis_i = GENERATORS[name]
        assert numbers == pytest.approx([v for v in (clis_mean, low, high, clis_i) if v is not None], abs=0.005)


def test_markdown_escapes_user_text():
    cell = escape_markdown("a|b *c* <script>")
    assert split_markdown_row(f"| 1 | {cell} | 2 |") == ["1", cell, "2"]  # the pipe does not split
    assert "<" not in cell and unescape_markdown(cell) == "a|b *c* <script>"


def test_markdown_metric_keys_cannot_break_out_of_their_code_span(tmp_path):
    from leaderboard.table import build_boards

    key = "x`" + "<img src=x onerror=alert(1)>`"
    metrics = [{"key": key, "label": MALICIOUS, "description": MALICIOUS}]
    path = tmp_path / "r.json"
    document = result_document([{"name": "a", "values": {key: {"value": 1.0}}}], study=MALICIOUS, metrics=metrics)
    path.write_text(json.dumps(document))
    markdown = boards_to_markdown(build_boards([load_result(path)]), title=MALICIOUS)
    definition = next(line for line in markdown.splitlines() if line.startswith("- **"))
    # CommonMark: a code span closes only on a backtick run as long as its opening one.
    span = re.search(r"\((`+) ?(.*?) ?\1\)", definition)
    assert span is not None and span.group(2) == key
    fence, content = span.group(1), span.group(2)
    assert all(len(run) != len(fence) for run in re.findall(r"`+", content))  # nothing closes it early
    outside = definition.replace(span.group(0), "")
    assert "<" not in outside and "<img" not in markdown.replace(span.group(0), "")


def test_studies_whose_names_slug_alike_get_separate_anchors_and_plots(tmp_path):
    paths = []
    for study in ("my study", "my-study"):
        path = tmp_path / f"{study.replace(' ', '_')}.json"
        path.write_text(json.dumps(result_document([generator_row("gligen")], study=study)))
        paths.append(path)
    report = build_site(paths, tmp_path / "site")
    index = report.index.read_text()
    anchors = re.findall(r'id="board-([a-z0-9-]+)"', index)
    assert len(anchors) == 2 and len(set(anchors)) == 2
    plots = re.findall(r'src="(plots/[^"]+\.png)"', index)
    assert len(set(plots)) == len(plots)


def test_csv_export_keeps_full_precision(site):
    frame = pd.read_csv(site.exports["csv"], keep_default_na=False, na_values=[""])
    assert list(frame["name"]) == ["instdiff", "gligen", MALICIOUS]
    for _, record in frame.iterrows():
        clis_mean, low, high, clis_i = GENERATORS[record["name"]]
        assert record["clis_mean"] == clis_mean and record["clis_i_mean"] == clis_i
        assert (pd.isna(record["clis_mean_ci_low"]) if low is None else record["clis_mean_ci_low"] == low)
        assert (pd.isna(record["clis_mean_ci_high"]) if high is None else record["clis_mean_ci_high"] == high)
        assert record["study"] == "compare" and record["n_images"] == 4


# --- row pages ---------------------------------------------------------------------------


def page_for(site, name: str) -> Path:
    row = next(r for b in site.boards for r in b.rows if r.name == name)
    return site.out_dir / "rows" / f"{row.slug}.html"


def test_best_and_worst_candidates_are_drawn_with_score_coloured_boxes(site):
    folder = site.out_dir / "rows" / "compare-gligen"
    # thumbnails=2: best are CLIS 90 and 70, worst are 10 and 50 (the failed one is skipped).
    expected = {"best-1": CANDIDATES[0], "best-2": CANDIDATES[3], "worst-1": CANDIDATES[1], "worst-2": CANDIDATES[2]}
    for stem, (_, colour, _, instance_score) in expected.items():
        with Image.open(folder / f"{stem}.png") as opened:
            image = opened.convert("RGB")
        assert image.size == (320, 320)  # 64 px candidates are enlarged 5x; the box spans 80..240
        assert image.getpixel((160, 220)) == colour  # inside the box, below its tag: the candidate itself
        assert image.getpixel((20, 20)) == colour  # outside the box
        r, g, b = image.getpixel((81, 220))  # on the box's left edge
        if instance_score >= 80:
            assert g > r + 40, (stem, (r, g, b))  # green end of the scale
        elif instance_score <= 20:
            assert r > g + 40, (stem, (r, g, b))  # red end of the scale
    assert not (folder / "best-3.png").exists()
    page = page_for(site, "gligen").read_text()
    assert page.index("best-1.png") < page.index("best-2.png") < page.index("worst-1.png")


def test_row_page_lists_every_instance_and_plots_distributions(site):
    page = page_for(site, "gligen")
    instances = next(t for t in read_html(page).tables if t["head"] and t["head"][0] == "Layout")
    assert len(instances["rows"]) == len(CANDIDATES)  # one instance per scored candidate
    scores = [float(r[-1]) for r in instances["rows"]]
    assert scores == sorted(s for *_, s in CANDIDATES)  # lowest first
    frame = pd.read_csv(site.out_dir / "rows" / "compare-gligen" / "instances.csv")
    assert sorted(frame["score"]) == sorted(s for *_, s in CANDIDATES)
    with Image.open(site.out_dir / "rows" / "compare-gligen" / "distributions.png") as plot:
        assert plot.format == "PNG" and plot.width > 300
    with Image.open(site.out_dir / "plots" / "compare.png") as plot:
        assert plot.format == "PNG"


def test_rows_without_scores_degrade_to_a_note(site):
    no_scores = page_for(site, MALICIOUS).read_text()
    assert "names no scores file" in no_scores
    missing = page_for(site, "instdiff").read_text()
    assert "scores file instdiff/scores.jsonl not found" in missing
    assert any("instdiff" in note for note in site.notes)
    gligen = page_for(site, "gligen").read_text()
    assert "1 candidate(s) failed to score" in gligen


def test_pick_best_and_worst_never_repeats_a_candidate():
    def cand(line, clis, error=None):
        return Candidate(line=line, layout_id="L", image=f"{line}.png", scores={"clis": clis}, instances=[], error=error)

    candidates = [cand(1, 40.0), cand(2, 80.0), cand(3, None), cand(4, 95.0, error="broken"), cand(5, 60.0)]
    best, worst = pick_best_and_worst(candidates, 2)
    assert [c.line for c in best] == [2, 5]
    assert [c.line for c in worst] == [1]


# --- safety ------------------------------------------------------------------------------


def test_every_user_string_is_escaped(site):
    pages = [site.index, *site.pages]
    for page in pages:
        text = page.read_text()
        assert MALICIOUS not in text, page
        reader = read_html(page)
        # The only scripts are the site's own sorter.
        assert [s.get("src") for s in reader.scripts] in (["assets/sort.js"], ["../assets/sort.js"])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in site.index.read_text()  # generator name and model name
    gligen = page_for(site, "gligen").read_text()
    assert gligen.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # label, caption, model
    names = [r[1] for r in board_table(site.index)["rows"]]
    assert MALICIOUS in names  # shown as text


def test_site_needs_no_network_and_every_link_resolves(site):
    for page in [site.index, *site.pages]:
        for link in read_html(page).links:
            assert not re.match(r"^[a-z]+:|^//", link), (page, link)
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.exists(), (page, link)
    css = (site.out_dir / "assets" / "style.css").read_text() + (site.out_dir / "assets" / "sort.js").read_text()
    assert "http" not in css and "@import" not in css


# --- keeping submissions -----------------------------------------------------------------


def test_add_keeps_a_submission_that_rebuilds_with_its_row_pages(bench, tmp_path, capsys):
    kept_dir = tmp_path / "kept"
    # instdiff names a scores file that does not exist: the submission is refused, naming it.
    code = clis_main(["leaderboard", "add", str(bench), "--results-dir", str(kept_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "rows[1] ('instdiff'): scores_file" in err
    # A refused submission leaves nothing behind that would block the corrected retry.
    assert not kept_dir.exists() or list(kept_dir.iterdir()) == []

    document = json.loads(bench.read_text())
    del document["rows"][1]["scores_file"]
    bench.write_text(json.dumps(document))
    assert clis_main(["leaderboard", "add", str(bench), "--results-dir", str(kept_dir), "--name", "run1"]) == 0
    kept = kept_dir / "compare-run1" / "result.json"
    assert (kept_dir / "compare-run1" / "gligen" / "scores.jsonl").read_text() == (
        bench.parent / "gligen" / "scores.jsonl"
    ).read_text()
    # Adding it again under the same name is refused unless --replace.
    assert clis_main(["leaderboard", "add", str(bench), "--results-dir", str(kept_dir), "--name", "run1"]) == 2
    assert clis_main(["leaderboard", "add", str(bench), "--results-dir", str(kept_dir), "--name", "run1", "--replace"]) == 0

    # The original folder can go away: the kept copy still draws gligen's candidates.
    moved = tmp_path / "moved"
    shutil.move(str(bench.parent), moved)
    report = build_site([kept_dir], tmp_path / "site", LeaderboardConfig(thumbnails=1))
    assert load_result(kept).rows[0].values["clis_mean"].value == GENERATORS["gligen"][0]
    gligen = page_for(report, "gligen").read_text()
    assert "rows/compare-gligen/best-1.png" in gligen and "not found" not in gligen


# --- end to end --------------------------------------------------------------------------


@pytest.mark.slow
def test_site_from_an_end_to_end_run_with_tiny_models(tiny_models, tmp_path):
    """Generate candidates (shapes generator), score them with a tiny CLIP and a tiny LM for
    CLIS-L through ``clis bench compare``'s Python API, and build the site from the result file
    it wrote: its nested provenance (CLIS-L manifest, scorer manifest) reads as key/value rows."""
    pytest.importorskip("clis.layout_score")
    from benchmarks.compare import compare
    from benchmarks.stats import BootstrapConfig
    from clis.formats import save_layouts
    from clis.layout import Layout
    from generators.registry import create_generator
    from generators.runner import generate_candidates

    layouts = [
        Layout.model_validate({"id": "tea", "caption": "a red cup on a table", "objects": [
            {"id": "cup-1", "label": "cup", "attributes": ["red"], "bbox": [0.4, 0.2, 0.2, 0.25]},
            {"id": "table-1", "label": "table", "bbox": [0.05, 0.5, 0.9, 0.45]}]}),
        Layout.model_validate({"id": "pet", "caption": "a cat on a mat", "objects": [
            {"id": "cat-1", "label": MALICIOUS, "bbox": [0.2, 0.2, 0.5, 0.5]}]}),
    ]
    layouts_path = save_layouts(layouts, tmp_path / "layouts.json")
    for name, jitter in [("tight", 0.0), ("loose", 0.3)]:
        adapter = create_generator("shapes", width=64, height=64, jitter=jitter)
        generate_candidates(layouts, adapter, tmp_path / "candidates" / name, n=3, seed=0)
    result = compare(
        [f"tight={tmp_path / 'candidates' / 'tight'}", f"loose={tmp_path / 'candidates' / 'loose'}"],
        tmp_path / "bench",
        layouts_path=layouts_path,
        score_config={"image_model": tiny_models["hf_clip"], "detector": "none",
                      "layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}},
        bootstrap=BootstrapConfig(n_resamples=50, seed=0),
        plot=False,
    )
    out = tmp_path / "site"
    assert clis_main(["leaderboard", "build", str(tmp_path / "bench" / "result.json"), "--out", str(out), "-q"]) == 0

    table = board_table(out / "index.html")
    by_clis = sorted(result.rows, key=lambda r: r.values["clis_mean"].value, reverse=True)
    # The shapes generator made every candidate: each row carries the demo-only badge.
    assert all(r[1].endswith(" demo only") for r in table["rows"]), table["rows"]
    assert [r[1].removesuffix(" demo only") for r in table["rows"]] == [r.name for r in by_clis]
    assert all(r.n_images == 6 for r in result.rows)
    frame = pd.read_csv(out / "leaderboard.csv")
    for row in result.rows:
        record = frame[frame["name"] == row.name].iloc[0]
        assert record["clis_mean"] == pytest.approx(row.values["clis_mean"].value)
    for row in result.rows:
        folder = out / "rows" / f"compare-{row.name}"
        assert (folder / "best-1.png").is_file() and (folder / "worst-1.png").is_file()
        assert len(pd.read_csv(folder / "instances.csv")) == 3 * 3  # 3 candidates x (2 + 1) objects
        page = (out / "rows" / f"compare-{row.name}.html").read_text()
        assert MALICIOUS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "not found" not in page
        assert_no_raw_dicts(page)

    # The result as written: the layout scorer's manifest under models.layout, and `scorer`.
    written = json.loads((tmp_path / "bench" / "result.json").read_text())
    assert isinstance(written["models"]["layout"], dict) and isinstance(written["scorer"], dict)
    assert load_result(tmp_path / "bench" / "result.json").scorer == written["scorer"]
    text = (out / "index.html").read_text()
    assert_no_raw_dicts(text)
    tables = kv_tables(out / "index.html")
    models, scorer = tables["Models"], tables["Scorer"]
    assert models["image_model"] == tiny_models["hf_clip"] and models["detector"] == "none"
    assert models["layout.metric"] == "clis_l"
    assert models["layout.llm.spec"] == models["layout.settings.llm"] == tiny_models["causal_lm"]
    assert models["layout.llm.sha256"] == written["models"]["layout"]["llm"]["sha256"]
    assert models["layout.settings.weights.llm"] == str(written["models"]["layout"]["settings"]["weights"]["llm"])
    assert not any(value.startswith("{") for value in [*models.values(), *scorer.values()])  # every dict was opened
    assert scorer["models.image_model.spec"] == tiny_models["hf_clip"]
    assert re.fullmatch(r"[0-9a-f]{64}", scorer["models.image_model.sha256"])
    assert scorer["models.layout.llm.spec"] == tiny_models["causal_lm"]
    assert scorer["weights.layout_score_used"] == "true" and scorer["weights.clis.layout"] == "0.5"
    assert scorer["settings.layout.llm"] == tiny_models["causal_lm"]
    assert scorer["environment.python"] == written["scorer"]["environment"]["python"]
    assert "Models of tight" not in tables  # rows carry the run's own models: nothing to repeat
