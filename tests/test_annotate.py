"""``clis annotate build`` and ``clis annotate merge``: the site's files and data, escaping,
sampling, input hashes, the clis.labels/1 format, and one-line errors (exit 2)."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotate_helpers import make_candidates, write_scores
from clis.annotate.labels import (
    LABELS_FORMAT, LAYOUT_COLUMNS, OBJECT_COLUMNS, LabelSet, read_labels, write_labels,
)  # fmt: skip
from clis.annotate.site import MAX_STRATA, sample_layouts
from clis.cli import app
from clis.errors import InputError

PREFIX = "window.CLIS_ANNOTATE = "
MALICIOUS = "<script>alert(\"x\")</script>'\"&amp;"


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def read_data(site: Path) -> dict:
    text = (site / "data.js").read_text(encoding="utf-8")
    assert text.startswith(PREFIX) and text.endswith(";\n")
    return json.loads(text[len(PREFIX):-2])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture()
def small(tmp_path):
    """Three example layouts with three candidates each."""
    cands, layouts = make_candidates(tmp_path, n=3, layout_ids=["chelsea", "coffee", "horse"])
    return tmp_path, cands, layouts


def build(cands, layouts, out, *extra):
    result = invoke("annotate", "build", cands, layouts, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- build


def test_build_writes_the_site_and_its_data(small):
    tmp_path, cands, layouts = small
    out = tmp_path / "annot"
    result = build(cands, layouts, out)
    assert "3 layouts, 9 candidates" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["assets", "data.js", "images", "index.html", "site.json"]
    assert sorted(p.name for p in (out / "assets").iterdir()) == ["annotate.css", "annotate.js"]
    assert len(list((out / "images").iterdir())) == 9  # nine different files

    data = read_data(out)
    source = json.loads(layouts.read_text())
    assert [layout["id"] for layout in data["layouts"]] == ["chelsea", "coffee", "horse"]
    for layout, given in zip(data["layouts"], source):
        assert layout["caption"] == given["caption"]
        assert [o["id"] for o in layout["objects"]] == [o["id"] for o in given["objects"]]
        assert [o["bbox"] for o in layout["objects"]] == [o["bbox"] for o in given["objects"]]
        assert [o["label"] for o in layout["objects"]] == [o["label"] for o in given["objects"]]
        for k, cand in enumerate(layout["candidates"]):
            original = cands / layout["id"] / f"{k}.png"
            assert cand["image"] == str(original)  # what clis score writes in scores.jsonl
            digest = sha256(original)
            assert cand["src"] == f"images/{digest[:16]}.png" and cand["sha256"] == digest
            assert (out / cand["src"]).read_bytes() == original.read_bytes()
            assert "scores" not in cand  # blind: no score in the site at all
    coffee = data["layouts"][1]
    assert coffee["objects"][0]["phrase"] == "red and white cup"
    assert "cup on saucer" in coffee["relations"]
    assert data["site"]["blind"] is True and data["site"]["sample"] is None

    page = (out / "index.html").read_text()
    assert "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'" in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="data.js" defer>', '<script src="assets/annotate.js" defer>']
    assert " style=" not in page and "<style" not in page  # the CSP forbids inline style
    for key in ("y / p / n", "1 \u2026 9", "a / z", "] or PageDown"):
        assert html.escape(key) in page  # the keys are documented on the page
    site_json = json.loads((out / "site.json").read_text())
    assert site_json["site"] == data["site"]


def test_input_hashes_and_site_id(small):
    tmp_path, cands, layouts = small
    scores = tmp_path / "scores.jsonl"
    write_scores(scores, cands, layouts)
    out = tmp_path / "annot"
    build(cands, layouts, out, "--scores", scores)
    site = read_data(out)["site"]
    inputs = {item["role"]: item for item in site["inputs"]}
    assert inputs["layouts"] == {"role": "layouts", "path": str(layouts), "sha256": sha256(layouts)}
    assert inputs["scores"] == {"role": "scores", "path": str(scores), "sha256": sha256(scores)}
    pairs = sorted([f"{p.parent.name}/{p.name}", sha256(p)] for p in cands.rglob("*.png"))
    expected = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    assert inputs["candidates"] == {"role": "candidates", "path": str(cands), "sha256": expected}

    data = read_data(out)
    without = {**data, "site": {k: v for k, v in data["site"].items() if k not in ("id", "built")}}
    canonical = json.dumps(without, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert site["id"] == hashlib.sha256(canonical.encode()).hexdigest()

    # A rebuild of the same inputs is the same site (browsers keep its labels); the user's own
    # file in the folder stays. Another setting makes another site.
    (out / "notes.txt").write_text("mine")
    build(cands, layouts, out, "--scores", scores)
    assert read_data(out)["site"]["id"] == site["id"]
    assert (out / "notes.txt").read_text() == "mine"
    build(cands, layouts, out, "--scores", scores, "--show-scores")
    assert read_data(out)["site"]["id"] != site["id"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".annot.")]  # no staging left behind


def test_show_scores_puts_each_candidates_scores_in(small):
    tmp_path, cands, layouts = small
    scores = tmp_path / "scores.jsonl"
    write_scores(scores, cands, layouts, clis=lambda lid, k: 40.0 + k,
                 instance=lambda lid, k, oid: 10.0 * k if oid.endswith("-1") else None)
    out = tmp_path / "annot"
    build(cands, layouts, out, "--scores", scores, "--show-scores")
    data = read_data(out)
    assert data["site"]["blind"] is False
    chelsea = data["layouts"][0]
    assert [c["scores"]["clis"] for c in chelsea["candidates"]] == [40.0, 41.0, 42.0]
    assert chelsea["candidates"][2]["scores"]["instances"] == {"cat-1": 20.0, "eye-1": 20.0, "eye-2": None, "nose-1": 20.0}
    assert "blind" not in (out / "index.html").read_text()


def test_scores_match_by_absolute_path(small, monkeypatch):
    tmp_path, cands, layouts = small
    scores = tmp_path / "scores.jsonl"
    write_scores(scores, cands, layouts, clis=lambda lid, k: 70.0 + k)
    monkeypatch.chdir(tmp_path)  # CANDIDATES typed relative, scores written with absolute paths
    build("cands", "layouts.json", "annot", "--scores", scores, "--show-scores")
    data = read_data(tmp_path / "annot")
    assert data["layouts"][0]["candidates"][1]["image"] == os.path.join("cands", "chelsea", "1.png")
    assert data["layouts"][0]["candidates"][1]["scores"]["clis"] == 71.0


def test_user_strings_are_escaped(tmp_path):
    bad_id = "<img src=x onerror=alert(1)>\"'"
    layouts = [{"id": bad_id, "caption": MALICIOUS, "objects": [
        {"id": "<b>o\"1</b>", "label": MALICIOUS, "bbox": [0.1, 0.1, 0.5, 0.5]},
        {"id": "o2", "label": "cup", "description": "<i>red</i> cup", "bbox": [0.5, 0.5, 0.4, 0.4]}]}]
    root = tmp_path / "c<x>\"'"
    cands, layouts_path = make_candidates(root, n=2, layouts=layouts)
    out = tmp_path / "annot"
    build(cands, layouts_path, out)
    page = (out / "index.html").read_text()
    assert "<x>" not in page and "c&lt;x&gt;&#34;&#39;" in page  # the CANDIDATES path, escaped
    script = (out / "data.js").read_text()
    assert "<" not in script and ">" not in script and "&" not in script
    data = read_data(out)
    layout = data["layouts"][0]
    assert layout["id"] == bad_id and layout["caption"] == MALICIOUS
    assert layout["objects"][0]["label"] == MALICIOUS and layout["objects"][1]["phrase"] == "<i>red</i> cup"
    js = (out / "assets" / "annotate.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js


# --------------------------------------------------------------------------- sampling


def test_stratified_sample_takes_one_layout_per_score_stratum():
    ids = [f"l{i:02d}" for i in range(15)]
    scores = {layout_id: float(100 - 5 * i) for i, layout_id in enumerate(ids)}  # l00 best, l14 worst
    kept, described = sample_layouts(ids, 5, seed=3, best_scores=scores)
    assert MAX_STRATA == 5 and len(kept) == 5
    assert kept == sorted(kept)  # in the layouts' own order
    # Five strata of three layouts each, by score: l14-l12, l11-l09, ..., l02-l00: one from each.
    for stratum in range(5):
        members = {f"l{i:02d}" for i in range(3 * stratum, 3 * stratum + 3)}
        assert len(members & set(kept)) == 1
    assert described["n"] == 5 and described["seed"] == 3
    assert [s["kept"] for s in described["strata"]] == [1, 1, 1, 1, 1]
    assert described["strata"][0] == {"from": 30.0, "to": 40.0, "layouts": 3, "kept": 1}
    assert sample_layouts(ids, 5, seed=3, best_scores=scores) == (kept, described)  # deterministic
    others = {tuple(sample_layouts(ids, 5, seed=s, best_scores=scores)[0]) for s in range(10)}
    assert len(others) > 1  # the seed matters


def test_stratified_sample_keeps_unscored_layouts_as_their_own_stratum():
    ids = [f"l{i}" for i in range(10)]
    scores = {layout_id: (None if i >= 6 else float(i)) for i, layout_id in enumerate(ids)}
    kept, described = sample_layouts(ids, 5, seed=0, best_scores=scores)
    # 4 of 10 unscored: round(5 * 4 / 10) = 2 from them, 3 from the three strata of l0-l5.
    assert len(set(kept) & {"l6", "l7", "l8", "l9"}) == 2
    for pair in (("l0", "l1"), ("l2", "l3"), ("l4", "l5")):
        assert len(set(kept) & set(pair)) == 1
    assert described["strata"][-1] == {"from": None, "to": None, "layouts": 4, "kept": 2}


def test_uniform_sample_is_deterministic():
    ids = [f"l{i}" for i in range(20)]
    kept, described = sample_layouts(ids, 4, seed=7)
    assert len(set(kept)) == 4 and kept == sorted(kept, key=ids.index)
    assert described == {"n": 4, "seed": 7, "method": "uniform"}
    assert sample_layouts(ids, 4, seed=7)[0] == kept


def test_sample_on_the_command_line(tmp_path):
    cands, layouts = make_candidates(tmp_path, n=2)  # the seven example layouts
    ids = [layout["id"] for layout in json.loads(layouts.read_text())]
    rank = {layout_id: i for i, layout_id in enumerate(ids)}
    scores = tmp_path / "scores.jsonl"
    write_scores(scores, cands, layouts, clis=lambda lid, k: 10.0 * rank[lid] + k)  # best = 10 i + 1
    out = tmp_path / "annot"
    build(cands, layouts, out, "--scores", scores, "--sample", 3, "--seed", 11)
    data = read_data(out)
    kept = [layout["id"] for layout in data["layouts"]]
    # 7 layouts in 3 strata of 3, 2 and 2 (by best clis): one layout from each.
    assert len(set(kept) & set(ids[0:3])) == 1
    assert len(set(kept) & set(ids[3:5])) == 1
    assert len(set(kept) & set(ids[5:7])) == 1
    assert data["site"]["sample"]["n"] == 3 and data["site"]["sample"]["seed"] == 11
    again = tmp_path / "again"
    build(cands, layouts, again, "--scores", scores, "--sample", 3, "--seed", 11)
    assert [layout["id"] for layout in read_data(again)["layouts"]] == kept
    assert read_data(again)["site"]["id"] == data["site"]["id"]
    uniform = tmp_path / "uniform"
    build(cands, layouts, uniform, "--sample", 2, "--seed", 1)
    assert read_data(uniform)["site"]["sample"] == {"n": 2, "seed": 1, "method": "uniform"}
    assert len(read_data(uniform)["layouts"]) == 2


# --------------------------------------------------------------------------- labels


def export(site: dict, annotator: str, objects=(), layouts=(), time="2026-03-01T10:00:00.000Z") -> dict:
    return {
        "format": LABELS_FORMAT, "site": site, "annotators": [annotator], "exported": time,
        "objects": [{"annotator": annotator, "layout_id": lid, "image": image, "object_id": oid, "label": label,
                     "time": time} for lid, image, oid, label in objects],
        "layouts": [{"annotator": annotator, "layout_id": lid, "best": best, "plausible": plausible, "time": time}
                    for lid, best, plausible in layouts],
    }  # fmt: skip


@pytest.fixture()
def built(small):
    tmp_path, cands, layouts = small
    out = tmp_path / "annot"
    build(cands, layouts, out)
    return tmp_path, read_data(out)


def write(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def test_merge_two_annotators(built):
    tmp_path, data = built
    site = data["site"]
    chelsea = data["layouts"][0]
    img0, img1 = chelsea["candidates"][0]["image"], chelsea["candidates"][1]["image"]
    alice = write(tmp_path / "alice.json", export(site, "alice", [("chelsea", img0, "cat-1", "yes"),
                                                                ("chelsea", img0, "eye-1", "partly")],
                                                  [("chelsea", img1, "yes")]))
    bob = write(tmp_path / "bob.json", export(site, "bob", [("chelsea", img0, "cat-1", "no")], [("chelsea", None, "no")]))
    out = tmp_path / "labels.json"
    result = invoke("annotate", "merge", alice, bob, "-o", out)
    assert result.exit_code == 0, result.output
    assert "2 annotators (alice, bob)" in result.output
    merged = json.loads(out.read_text())
    assert merged["format"] == LABELS_FORMAT and merged["site"] == site
    assert merged["annotators"] == ["alice", "bob"]
    assert [(r["annotator"], r["object_id"], r["label"]) for r in merged["objects"]] == [
        ("alice", "cat-1", "yes"), ("alice", "eye-1", "partly"), ("bob", "cat-1", "no")]
    assert [(r["annotator"], r["best"], r["plausible"]) for r in merged["layouts"]] == [
        ("alice", img1, "yes"), ("bob", None, "no")]

    labels = read_labels([out])
    assert isinstance(labels, LabelSet)
    # The format's columns, plus where each row was read (for later error lines).
    assert list(labels.objects.columns) == [*OBJECT_COLUMNS, "where"]
    assert list(labels.layouts.columns) == [*LAYOUT_COLUMNS, "where"]
    assert labels.objects["where"].tolist() == [f"{out}: objects[{k}]" for k in range(3)]
    assert labels.sources == [str(out)] and labels.site["id"] == site["id"]
    assert labels.layouts["best"].tolist() == [img1, None]
    # The same answers read twice (an export and the merged file) are one set, not a conflict.
    assert len(read_labels([alice, out]).objects) == 3
    again = tmp_path / "again.json"
    write_labels(labels, again)
    # A written file reads back as it was (but for where each row was read).
    assert read_labels([again]).objects.drop(columns="where").equals(labels.objects.drop(columns="where"))

    # --out is never an input, and an existing --out needs --overwrite.
    assert "names the same file" in one_error_line(invoke("annotate", "merge", alice, bob, "-o", alice))
    assert "--overwrite" in one_error_line(invoke("annotate", "merge", alice, bob, "-o", out))
    assert invoke("annotate", "merge", alice, bob, "-o", out, "--overwrite").exit_code == 0


def test_merge_refuses_conflicts_and_other_sites(built):
    tmp_path, data = built
    site = data["site"]
    img0 = data["layouts"][0]["candidates"][0]["image"]
    first = write(tmp_path / "a1.json", export(site, "alice", [("chelsea", img0, "cat-1", "yes")]))
    second = write(tmp_path / "a2.json", export(site, "alice", [("chelsea", img0, "cat-1", "no")]))
    line = one_error_line(invoke("annotate", "merge", first, second, "-o", tmp_path / "m.json"))
    assert str(second) in line and "objects[0]" in line and "'label'" in line and "conflicts" in line
    assert not (tmp_path / "m.json").exists()
    layout1 = write(tmp_path / "l1.json", export(site, "alice", layouts=[("chelsea", img0, "yes")]))
    layout2 = write(tmp_path / "l2.json", export(site, "alice", layouts=[("chelsea", img0, "no")]))
    line = one_error_line(invoke("annotate", "merge", layout1, layout2, "-o", tmp_path / "m.json"))
    assert "layouts[0]" in line and "'plausible'" in line
    other = write(tmp_path / "other.json", export({**site, "id": "f" * 64}, "bob"))
    line = one_error_line(invoke("annotate", "merge", first, other, "-o", tmp_path / "m.json"))
    assert str(other) in line and "site.id" in line and "different sites" in line


@pytest.mark.parametrize(("change", "where", "field"), [
    (lambda d: d["objects"][1].update(label="maybe"), "objects[1]", "label"),
    (lambda d: d["objects"][0].pop("time"), "objects[0]", "time"),
    (lambda d: d["objects"][0].update(time="yesterday"), "objects[0]", "time"),
    (lambda d: d["objects"][1].update(annotator="carol"), "objects[1]", "annotator"),
    (lambda d: d["objects"][0].update(extra=1), "objects[0]", "extra"),
    (lambda d: d["objects"].append(dict(d["objects"][0])), "objects[2]", "object_id"),
    (lambda d: d["layouts"][0].update(plausible="maybe"), "layouts[0]", "plausible"),
    (lambda d: d["layouts"][0].update(best=None, plausible=None), "layouts[0]", "best"),
    (lambda d: d["layouts"][0].update(best=3), "layouts[0]", "best"),
    (lambda d: d.update(format="clis.labels/0"), None, "format"),
    (lambda d: d["site"].pop("id"), None, "site.id"),
    (lambda d: d.pop("exported"), None, "exported"),
    (lambda d: d.update(objects={}), None, "objects"),
])
def test_label_file_errors_name_file_record_and_field(tmp_path, change, where, field):
    document = export({"id": "ab" * 32}, "alice", [("tea", "c/tea/0.png", "cup-1", "yes"),
                                                   ("tea", "c/tea/0.png", "table-1", "no")],
                      [("tea", "c/tea/0.png", "yes")])
    change(document)
    path = write(tmp_path / "bad.json", document)
    with pytest.raises(InputError) as caught:
        read_labels([path])
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    if where is not None:
        assert f": {where}: " in message
    assert f"field '{field}'" in message


def test_label_file_that_is_not_json_is_one_line(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text("{nope")
    line = one_error_line(invoke("annotate", "merge", path, "-o", tmp_path / "m.json"))
    assert str(path) in line


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_line_errors(small, monkeypatch):
    tmp_path, cands, layouts = small
    out = tmp_path / "annot"
    assert "not found" in one_error_line(invoke("annotate", "build", tmp_path / "nope", layouts, "--out", out))
    assert "needs --scores" in one_error_line(invoke("annotate", "build", cands, layouts, "--out", out, "--show-scores"))
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", cands / "site"))
    assert "inside CANDIDATES" in line
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", layouts))
    assert "is a file" in line
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", tmp_path))
    assert "holds" in line  # tmp_path holds the layouts file and the candidates
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("mine")
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", busy))
    assert "not an earlier clis annotate site" in line
    assert (busy / "thesis.tex").read_text() == "mine"
    assert "--sample 0" in one_error_line(invoke("annotate", "build", cands, layouts, "--out", out, "--sample", 0))
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", out, "--max-pixels", 100))
    assert "exceeds the limit of 100" in line and "--max-pixels" in line
    monkeypatch.setenv("CLIS_MAX_INPUT_BYTES", "100")
    assert "byte limit" in one_error_line(invoke("annotate", "build", cands, layouts, "--out", out))
    monkeypatch.delenv("CLIS_MAX_INPUT_BYTES")
    (cands / "chelsea" / "1.png").write_text("not an image")
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", out))
    assert str(cands / "chelsea" / "1.png") in line and "not an image" in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".annot.")]


def test_listed_candidates_that_are_not_regular_files_are_refused(small):
    tmp_path, cands, layouts = small
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    records = json.loads(layouts.read_text())
    records[0]["images"] = [str(fifo)]
    layouts.write_text(json.dumps(records))
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot"))
    assert str(fifo) in line and "not a regular file" in line
    records[0]["images"] = [str(tmp_path / "gone.png")]  # missing: left out with a warning
    layouts.write_text(json.dumps(records))
    result = invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot")
    assert result.exit_code == 0 and "gone.png: listed for layout 'chelsea' but not found" in result.output


def test_scores_of_other_candidates_are_refused(small):
    tmp_path, cands, layouts = small
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"layout_id": "chelsea", "image": "/etc/passwd", "clis": 50.0}) + "\n")
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot", "--scores", scores))
    # A record naming a file outside the layout's candidates is refused, naming line and field.
    assert "scores.jsonl: line 1: field 'image': '/etc/passwd' is" in line and "not a candidate of layout" in line
    scores.write_text(json.dumps({"layout_id": "chelsea", "image": "elsewhere/0.png", "clis": 50.0}) + "\n")
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot", "--scores", scores))
    assert "no score record names a candidate" in line
    scores.write_text('{"layout_id": "chelsea", "image": "x.png", "clis": NaN}\n')
    line = one_error_line(invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot", "--scores", scores))
    assert "line 1" in line


def test_layouts_without_candidates_are_left_out_with_a_warning(tmp_path):
    cands, layouts = make_candidates(tmp_path, n=2, layout_ids=["chelsea", "coffee"])
    (cands / "coffee" / "0.png").unlink()
    (cands / "coffee" / "1.png").unlink()
    result = invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot")
    assert result.exit_code == 0, result.output
    assert "no candidate image for layout 'coffee'" in result.output
    assert [layout["id"] for layout in read_data(tmp_path / "annot")["layouts"]] == ["chelsea"]


def test_a_link_out_of_the_candidates_folder_is_left_out(tmp_path):
    cands, layouts = make_candidates(tmp_path, n=2, layout_ids=["chelsea"])
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    (cands / "chelsea" / "0.png").rename(secret)
    (cands / "chelsea" / "0.png").symlink_to(secret)
    result = invoke("annotate", "build", cands, layouts, "--out", tmp_path / "annot")
    assert result.exit_code == 0, result.output
    assert "a link to a file outside" in result.output
    images = [c["image"] for c in read_data(tmp_path / "annot")["layouts"][0]["candidates"]]
    assert images == [str(cands / "chelsea" / "1.png")]
    copied = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "annot" / "images").iterdir()}
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in copied
