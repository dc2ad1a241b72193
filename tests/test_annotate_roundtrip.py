"""The whole human-label loop on the examples with the tiny models, in a real headless Chromium:

score the candidates -> ``clis annotate build`` -> two annotators label with the keyboard and
export -> ``clis annotate merge`` -> ``clis bench agreement`` -> ``clis bench calibrate`` ->
``clis pick --config`` with the calibrated thresholds.

The answers are chosen from the scores so that every expected figure can be recomputed here
from the files by plain counting (pairs won for the AUC, a loop over thresholds for the
calibration), not through the code under test.
"""

from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from annotate_helpers import Watched, chromium_available, export_labels, label_layout, launch_chromium, \
    make_candidates, open_site
from pipeline_helpers import run_cli

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not chromium_available(), reason="no Chromium (install Debian's chromium)")]

LAYOUT_IDS = ("chelsea", "coffee", "rocket")


def lowest_threshold(pairs: list[tuple[float, int]], target: float) -> float:
    """The lowest score t whose answers with score >= t are right at least ``target`` of the time."""
    best = None
    for t in sorted({s for s, _ in pairs}, reverse=True):
        kept = [y for s, y in pairs if s >= t]
        if sum(kept) / len(kept) >= target:
            best = t
    return best


def pairs_won(pairs: list[tuple[float, int]]) -> float:
    """Mann-Whitney: the share of (yes, no) pairs where the yes scores higher (ties half)."""
    yes = [s for s, y in pairs if y == 1]
    no = [s for s, y in pairs if y == 0]
    won = sum((a > b) + 0.5 * (a == b) for a in yes for b in no)
    return won / (len(yes) * len(no))


def test_label_agree_calibrate_pick(tiny_models, tmp_path, capsys):
    cands, layouts = make_candidates(tmp_path, n=3, layout_ids=LAYOUT_IDS)
    config = tmp_path / "score.json"
    config.write_text(json.dumps({"image_model": tiny_models["hf_clip"], "detector": "none",
                                  "layout": {"llm": tiny_models["causal_lm"], "text_embedder": "none"}}))
    scores = tmp_path / "scores.jsonl"
    code, output = run_cli(["score", str(cands), str(layouts), "--out", str(scores), "--config", str(config)], capsys)
    assert code == 0, output
    records = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(records) == 9 and all(r["error"] is None and r["clis_l"] is not None for r in records)

    code, output = run_cli(["annotate", "build", str(cands), str(layouts), "--scores", str(scores),
                            "--out", str(tmp_path / "annot")], capsys)
    assert code == 0, output

    # Alice calls an object right when its score is at least the median, with one exception
    # per layout (the first object of the first candidate is always "no"), so the score is a
    # good but imperfect predictor; she picks candidate 1 as best and finds the layout with
    # the lowest CLIS-L implausible.
    by_layout = {lid: [r for r in records if r["layout_id"] == lid] for lid in LAYOUT_IDS}
    scores_all = sorted(i["score"] for r in records for i in r["instances"])
    median = scores_all[len(scores_all) // 2]
    clis_l = {lid: by_layout[lid][0]["clis_l"] for lid in LAYOUT_IDS}
    assert len(set(clis_l.values())) == 3, clis_l  # distinct, so the plausibility threshold is clear
    implausible = min(clis_l, key=clis_l.get)
    alice_answers = {}
    for lid in LAYOUT_IDS:
        for k, record in enumerate(by_layout[lid]):
            for j, inst in enumerate(record["instances"]):
                right = inst["score"] >= median and not (k == 0 and j == 0)
                alice_answers[(record["image"], inst["object_id"])] = "yes" if right else "no"

    with sync_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            alice = Watched(browser)
            open_site(alice, tmp_path / "annot", "alice")
            for lid in LAYOUT_IDS:
                answers = [alice_answers[(r["image"], i["object_id"])] for r in by_layout[lid] for i in r["instances"]]
                label_layout(alice.page, answers, best=1, plausible="no" if lid == implausible else "yes")
            exported = export_labels(alice.page, tmp_path / "alice.json")
            assert alice.clean(), (alice.console, alice.dialogs, alice.requests)
            alice.close()
            # Bob labels the first layout only, and disagrees with alice on its first candidate's objects.
            bob = Watched(browser)
            open_site(bob, tmp_path / "annot", "bob")
            first = by_layout[LAYOUT_IDS[0]]
            bob_answers = [("no" if alice_answers[(r["image"], i["object_id"])] == "yes" else "yes") if k == 0
                           else alice_answers[(r["image"], i["object_id"])]
                           for k, r in enumerate(first) for i in r["instances"]]
            label_layout(bob.page, bob_answers, best=2, plausible="yes", next_layout=False)
            export_labels(bob.page, tmp_path / "bob.json")
            assert bob.clean(), (bob.console, bob.dialogs, bob.requests)
            bob.close()
        finally:
            browser.close()
    n_objects = sum(len(r["instances"]) for r in records)
    assert len(exported["objects"]) == n_objects and len(exported["layouts"]) == 3
    assert {(o["image"], o["object_id"]): o["label"] for o in exported["objects"]} == alice_answers

    code, output = run_cli(["annotate", "merge", str(tmp_path / "alice.json"), str(tmp_path / "bob.json"),
                            "-o", str(tmp_path / "labels.json")], capsys)
    assert code == 0, output

    code, output = run_cli(["bench", "agreement", str(scores), str(tmp_path / "labels.json"), "-o",
                            str(tmp_path / "agreement"), "--bootstrap", "100"], capsys)
    assert code == 0, output
    result = json.loads((tmp_path / "agreement" / "result.json").read_text())
    rows = {r["name"]: r["values"] for r in result["rows"]}
    # Every answer counts: alice's and bob's.
    answers = [(i["score"], 1 if alice_answers[(r["image"], i["object_id"])] == "yes" else 0)
               for r in records for i in r["instances"]]
    first_images = {r["image"]: k for k, r in enumerate(by_layout[LAYOUT_IDS[0]])}
    answers += [(i["score"], (1 - y) if first_images[r["image"]] == 0 else y)
                for r in by_layout[LAYOUT_IDS[0]] for i in r["instances"]
                for y in [1 if alice_answers[(r["image"], i["object_id"])] == "yes" else 0]]
    assert rows["instance_score"]["auc"]["value"] == pytest.approx(pairs_won(answers))
    # Best-of-N of clis: alice's best is candidate 1 everywhere, bob's is candidate 2 of the first layout.
    def top(lid):
        part = by_layout[lid]
        return max(range(3), key=lambda k: part[k]["clis"])
    credits = [top(lid) == 0 for lid in LAYOUT_IDS] + [top(LAYOUT_IDS[0]) == 1]
    assert rows["clis"]["best_of_n"]["value"] == pytest.approx(sum(credits) / 4)
    assert rows["clis"]["chance"]["value"] == pytest.approx(1 / 3)
    kappa = [r for r in result["tables"]["inter_annotator"] if r["measure"] == "cohen_kappa"
             and r["what"] == "objects (yes/no)"]
    assert kappa and kappa[0]["annotators"] == "alice | bob"

    code, output = run_cli(["bench", "calibrate", str(scores), str(tmp_path / "labels.json"), "-o",
                            str(tmp_path / "calibrate"), "--target-precision", "0.9", "--bootstrap", "100"], capsys)
    assert code == 0, output
    pick_config = json.loads((tmp_path / "calibrate" / "pick-config.json").read_text())["pick"]
    assert pick_config["min_instance"] == lowest_threshold(answers, 0.9)
    plausible = [(clis_l[lid], 0 if lid == implausible else 1) for lid in LAYOUT_IDS] + [(clis_l[LAYOUT_IDS[0]], 1)]
    assert pick_config["min_layout"] == lowest_threshold(plausible, 0.9)

    code, output = run_cli(["pick", str(cands), str(layouts), "--scores", str(scores), "--out", str(tmp_path / "ds"),
                            "--config", str(tmp_path / "calibrate" / "pick-config.json")], capsys)
    assert code == 0, output
    coco = COCO(str(tmp_path / "ds" / "annotations.json"))
    kept = {lid for lid in LAYOUT_IDS if clis_l[lid] >= pick_config["min_layout"]}
    expected = sum(1 for lid in kept for i in by_layout[lid][top(lid)]["instances"]
                   if i["score"] >= pick_config["min_instance"])
    assert expected > 0 and len(coco.dataset["annotations"]) == expected
    assert all(a["clis_score"] >= pick_config["min_instance"] for a in coco.dataset["annotations"])
