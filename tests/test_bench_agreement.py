"""`clis bench agreement` and `clis bench calibrate` against hand-computed figures.

Two layouts, two candidates each, two objects per candidate. Alice's answers (partly = no):

    image      object  score  answer        image      object  score  answer
    L1/0.png   a       80     yes           L2/0.png   c       30     no
    L1/0.png   b       40     no            L2/0.png   d       90     yes
    L1/1.png   a       65     yes           L2/1.png   c       70     no
    L1/1.png   b       55     partly        L2/1.png   d       62     yes

AUC: of the 16 (yes, no) pairs the yes scores higher in 14 (65 and 62 lose to 70): 0.875.
At --min-instance 60: kept 90, 80, 70, 65, 62; 4 of them yes (precision 0.8), every yes
kept (recall 1), and 7 of 8 answers right (70 is kept but no): accuracy 0.875.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from benchmarks.agreement import agreement, roc_auc
from benchmarks.calibrate import calibrate, choose_threshold
from benchmarks.stats import BootstrapConfig
from clis.errors import InputError
from clis.formats import save_layouts
from clis.layout import Layout
from pipeline_helpers import run_cli

FAST = BootstrapConfig(n_resamples=200, seed=0)
SITE = {"id": "site-1"}
T = "2026-12-01T10:00:00Z"

# (layout, candidate, clis, global, clis_l, {object: score})
CANDIDATES = [
    ("L1", "0.png", 70.0, 30.0, 80.0, {"a": 80.0, "b": 40.0}),
    ("L1", "1.png", 60.0, 32.0, 80.0, {"a": 65.0, "b": 55.0}),
    ("L2", "0.png", 50.0, 25.0, 40.0, {"c": 30.0, "d": 90.0}),
    ("L2", "1.png", 75.0, 20.0, 40.0, {"c": 70.0, "d": 62.0}),
]
ALICE = {("L1/0.png", "a"): "yes", ("L1/0.png", "b"): "no", ("L1/1.png", "a"): "yes", ("L1/1.png", "b"): "partly",
         ("L2/0.png", "c"): "no", ("L2/0.png", "d"): "yes", ("L2/1.png", "c"): "no", ("L2/1.png", "d"): "yes"}
LAYOUTS = [
    Layout.model_validate({"id": "L1", "caption": "a cat and a dog", "objects": [
        {"id": "a", "label": "cat", "bbox": [0.1, 0.1, 0.4, 0.4]}, {"id": "b", "label": "dog", "bbox": [0.5, 0.5, 0.4, 0.4]}]}),
    Layout.model_validate({"id": "L2", "caption": "a cup and a plate", "objects": [
        {"id": "c", "label": "cup", "bbox": [0.1, 0.1, 0.3, 0.3]}, {"id": "d", "label": "plate", "bbox": [0.4, 0.4, 0.5, 0.5]}]}),
]


def scores_file(tmp_path, root="cands"):
    lines = []
    for layout, name, clis, global_, clis_l, objects in CANDIDATES:
        instances = [{"object_id": o, "score": s, "region": 100.0 - s, "grounding": s / 2,
                      "detection": {"found": s > 50, "iou": 0.5 if s > 50 else None}} for o, s in objects.items()]
        lines.append({"layout_id": layout, "image": f"{root}/{layout}/{name}", "clis": clis, "clis_i": clis,
                      "clis_l": clis_l, "global": global_, "instances": instances, "error": None})
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def labels_file(path, annotator, objects, layouts=(), site=SITE):
    data = {"format": "clis.labels/1", "site": site, "annotators": [annotator], "exported": T,
            "objects": [{"annotator": annotator, "layout_id": image.split("/")[0], "image": f"cands/{image}",
                         "object_id": obj, "label": label, "time": T} for (image, obj), label in objects.items()],
            "layouts": [{"annotator": annotator, "layout_id": layout, "best": best and f"cands/{layout}/{best}",
                         "plausible": plausible, "time": T} for layout, best, plausible in layouts]}
    path.write_text(json.dumps(data))
    return path


def values(result, name):
    row = next(r for r in result.rows if r.name == name)
    return {k: v.value for k, v in row.values.items()}


@pytest.mark.parametrize("partly, auc", [("no", 14 / 16), ("drop", 10 / 12), ("yes", 12 / 15)])
def test_instance_score_auc_and_threshold_rates_by_hand(tmp_path, partly, auc):
    labels = labels_file(tmp_path / "alice.json", "alice", ALICE)
    result = agreement(scores_file(tmp_path), [labels], tmp_path / "out", partly=partly, bootstrap=FAST, plot=False)
    got = values(result, "instance_score")
    assert got["auc"] == pytest.approx(auc)
    if partly == "no":
        assert (got["accuracy"], got["precision"], got["recall"]) == pytest.approx((7 / 8, 4 / 5, 1.0))
    # The interval resamples two layouts: it holds the value.
    row = next(r for r in result.rows if r.name == "instance_score")
    assert row.values["auc"].ci_low <= auc + 1e-9 and row.values["auc"].ci_high >= auc - 1e-9
    # region is 100 - score: it ranks every pair the other way round, so its AUC is 1 - AUC.
    assert values(result, "region")["auc"] == pytest.approx(1 - auc)
    # grounding is score / 2: the same ranking; detection is 50 for score > 50 and 0 otherwise.
    assert values(result, "grounding")["auc"] == pytest.approx(auc)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["study"] == "agreement"


def test_roc_auc_is_the_mann_whitney_share_of_pairs():
    human = np.array([1, 0, 1, 0, 1.0])
    score = np.array([3, 1, 2, 2, 0.0])
    # yes scores 3, 2, 0 against no scores 1, 2: pairs won 2 + (1 + 0.5 tie) + 0 = 3.5 of 6.
    assert roc_auc(human, score) == pytest.approx(3.5 / 6)
    assert np.isnan(roc_auc(np.ones(3), score[:3]))


def test_best_of_n_against_chance_by_hand(tmp_path):
    alice = labels_file(tmp_path / "alice.json", "alice", ALICE, [("L1", "0.png", "yes"), ("L2", "0.png", "no")])
    bob = labels_file(tmp_path / "bob.json", "bob", {}, [("L1", "0.png", None), ("L2", "1.png", None)])
    result = agreement(scores_file(tmp_path), [alice, bob], tmp_path / "out", bootstrap=FAST, plot=False)
    # clis picks L1/0 (70) and L2/1 (75): right for alice on L1, for bob on both: 3 of 4.
    # global picks L1/1 (32) and L2/0 (25): right only for alice on L2: 1 of 4.
    assert values(result, "clis")["best_of_n"] == pytest.approx(0.75)
    assert values(result, "global")["best_of_n"] == pytest.approx(0.25)
    assert values(result, "clis")["chance"] == pytest.approx(0.5)
    table = {r["score"]: r for r in result.tables["best_of_n"]}
    assert table["clis"]["n"] == 4 and table["clis"]["n_layouts"] == 2
    # CLIS-L (80 and 40) against alice's plausible yes / no: perfectly ordered.
    assert values(result, "clis_l")["auc"] == pytest.approx(1.0)
    # The two annotators chose the same best candidate on 1 of 2 layouts.
    best = next(r for r in result.tables["inter_annotator"] if r["what"] == "best candidate")
    assert best["raw_agreement"] == pytest.approx(0.5)


def test_ties_at_the_top_share_the_credit(tmp_path):
    from benchmarks.agreement import best_of_n_credits
    import pandas as pd

    candidates = pd.DataFrame({"layout_id": ["x"] * 3, "image": ["0", "1", "2"], "clis": [5.0, 5.0, 1.0]})
    layouts = pd.DataFrame({"annotator": ["a", "b"], "layout_id": ["x", "x"], "best": ["1", "2"]})
    credits = best_of_n_credits(layouts, candidates, "clis")
    assert credits["credit"].tolist() == [0.5, 0.0]
    assert credits["chance"].tolist() == pytest.approx([1 / 3, 1 / 3])


def test_kappas_between_annotators_by_hand(tmp_path):
    items = [("L1/0.png", "a"), ("L1/0.png", "b"), ("L2/0.png", "c"), ("L2/0.png", "d")]
    alice = labels_file(tmp_path / "alice.json", "alice", dict(zip(items, ["yes", "no", "no", "yes"])))
    bob = labels_file(tmp_path / "bob.json", "bob", dict(zip(items, ["yes", "no", "yes", "yes"])))
    result = agreement(scores_file(tmp_path), [alice, bob], tmp_path / "out", bootstrap=FAST, plot=False)
    rows = {(r["what"], r["measure"]): r for r in result.tables["inter_annotator"]}
    # Cohen: observed 3/4; chance 0.5 * 0.75 + 0.5 * 0.25 = 0.5; kappa (0.75 - 0.5) / 0.5.
    cohen = rows[("objects (yes/partly/no)", "cohen_kappa")]
    assert cohen["value"] == pytest.approx(0.5) and cohen["n"] == 4 and cohen["raw_agreement"] == 0.75
    # Fleiss: mean item agreement 3/4; category shares 5/8 and 3/8, chance 34/64.
    fleiss = rows[("objects (yes/partly/no)", "fleiss_kappa")]
    assert fleiss["value"] == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))


def test_labels_naming_unknown_candidates_or_objects_are_one_line_errors(tmp_path):
    scores = scores_file(tmp_path)
    wrong_image = labels_file(tmp_path / "a.json", "alice", {("L3/0.png", "a"): "yes"})
    with pytest.raises(InputError, match=r"a\.json: objects\[0\] \(annotator 'alice'\), field 'image': "
                                         r"image 'cands/L3/0\.png' matches no scored candidate"):
        agreement(scores, [wrong_image], tmp_path / "o1", bootstrap=FAST, plot=False)
    wrong_object = labels_file(tmp_path / "b.json", "alice", {("L1/0.png", "zz"): "yes"})
    with pytest.raises(InputError, match=r"b\.json: objects\[0\], field 'object_id': 'zz' is not an instance"):
        agreement(scores, [wrong_object], tmp_path / "o2", bootstrap=FAST, plot=False)
    with pytest.raises(InputError, match=r"--partly 'maybe'"):
        agreement(scores, [wrong_object], tmp_path / "o3", partly="maybe", bootstrap=FAST, plot=False)


def test_choose_threshold_by_hand():
    human = np.array([1, 1, 0, 1, 1, 0, 0, 0.0])
    score = np.array([90, 80, 70, 65, 62, 55, 40, 30.0])
    # Precision from the top: 1, 1, 2/3, 3/4, 4/5, 4/6, ...: 0.8 is first reached again at 62.
    assert choose_threshold(human, score, 0.8) == pytest.approx((62.0, 0.8, 1.0))
    assert choose_threshold(human, score, 0.9) == pytest.approx((80.0, 1.0, 0.5))
    # Ties are kept together: at 5 both a yes and a no are kept, so 0.9 needs threshold 9.
    assert choose_threshold(np.array([1, 1, 0.0]), np.array([9, 5, 5.0]), 0.9) == pytest.approx((9.0, 1.0, 0.5))
    assert choose_threshold(np.zeros(3), score[:3], 0.5) is None


def test_calibrate_writes_a_config_that_pick_applies(tmp_path, capsys):
    scores = scores_file(tmp_path, root=str(tmp_path / "cands"))
    for layout, name, *_ in CANDIDATES:
        (tmp_path / "cands" / layout).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), "white").save(tmp_path / "cands" / layout / name)
    labels = labels_file(tmp_path / "alice.json", "alice", ALICE, [("L1", "0.png", "yes"), ("L2", "1.png", "no")])
    result = calibrate(scores, [labels], tmp_path / "cal", target_precision=0.9, bootstrap=FAST, plot=False)
    got = {r.name: {k: v.value for k, v in r.values.items()} for r in result.rows}
    assert got["min_instance"]["threshold"] == 80.0
    assert (got["min_instance"]["precision"], got["min_instance"]["recall"]) == pytest.approx((1.0, 0.5))
    # CLIS-L 80 (plausible) and 40 (not): 80 keeps only the plausible layout.
    assert got["min_layout"]["threshold"] == 80.0
    config = json.loads((tmp_path / "cal" / "pick-config.json").read_text())
    assert (config["pick"]["min_instance"], config["pick"]["min_layout"]) == (80.0, 80.0)
    assert config["pick"]["calibration"]["target_precision"]["min_instance"] == 0.9

    layouts = save_layouts(LAYOUTS, tmp_path / "layouts.json")
    code, output = run_cli(["pick", str(tmp_path / "cands"), str(layouts), "--scores", str(scores),
                            "--out", str(tmp_path / "ds"), "--config", str(tmp_path / "cal" / "pick-config.json")], capsys)
    assert code == 0, output
    coco = COCO(str(tmp_path / "ds" / "annotations.json"))
    # L2 falls to --min-layout 80; L1's best candidate (clis 70) keeps a (80) and loses b (40).
    assert [img["file_name"].split("/")[-1] for img in coco.dataset["images"]] == ["L1_0.png"]
    assert len(coco.dataset["annotations"]) == 1
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert summary["settings"] == {"top": 1, "min_instance": 80.0, "min_layout": 80.0, "rank_by": "clis"}
    # A flag still wins over the config: --min-instance 30 keeps b as well.
    code, output = run_cli(["pick", str(tmp_path / "cands"), str(layouts), "--scores", str(scores), "--out",
                            str(tmp_path / "ds2"), "--config", str(tmp_path / "cal" / "pick-config.json"),
                            "--min-instance", "30"], capsys)
    assert code == 0, output
    assert len(COCO(str(tmp_path / "ds2" / "annotations.json")).dataset["annotations"]) == 2


def test_calibrate_unreachable_precision_is_one_line_exit_2(tmp_path, capsys):
    labels = labels_file(tmp_path / "alice.json", "alice", {("L1/0.png", "a"): "no", ("L2/0.png", "d"): "no",
                                                            ("L1/1.png", "a"): "yes"})
    code, output = run_cli(["bench", "calibrate", str(scores_file(tmp_path)), str(labels), "-o", str(tmp_path / "c"),
                            "--bootstrap", "50"], capsys)
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1
    assert "--min-instance: no threshold reaches precision 0.9" in output and "Traceback" not in output


def test_pick_config_table_is_checked(tmp_path, capsys):
    from clis.pick import PickConfig

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pick": {"min_instanse": 70}}))
    with pytest.raises(InputError, match=r"bad\.json: pick\.min_instanse: unknown setting"):
        PickConfig.from_file(bad)
    bad.write_text(json.dumps({"pick": {"min_instance": "high"}}))
    with pytest.raises(InputError, match=r"bad\.json: pick\.min_instance: 'high' is not a valid value"):
        PickConfig.from_file(bad)
    good = tmp_path / "good.toml"
    good.write_text("[pick]\nmin_instance = 72.5\ntop = 2\n")
    assert PickConfig.from_file(good, top=None, min_layout=10.0) == PickConfig(top=2, min_instance=72.5, min_layout=10.0)


def test_an_unreachable_layout_precision_leaves_min_layout_out_and_says_why(tmp_path, capsys):
    # CLIS-L 80 for L1 and 40 for L2, but the plausible layout is L2: no CLIS-L threshold
    # keeps only plausible layouts, while the instance threshold (80) still stands.
    labels = labels_file(tmp_path / "alice.json", "alice", ALICE, [("L1", None, "no"), ("L2", None, "yes")])
    code, output = run_cli(["bench", "calibrate", str(scores_file(tmp_path)), str(labels), "-o", str(tmp_path / "c"),
                            "--bootstrap", "50", "--no-plot"], capsys)
    assert code == 0, output
    config = json.loads((tmp_path / "c" / "pick-config.json").read_text())["pick"]
    assert config["min_instance"] == 80.0 and "min_layout" not in config
    assert "warning: --min-layout not calibrated: --min-layout: no threshold reaches precision 0.9" in output


def test_cohen_kappa_where_annotators_never_vary(tmp_path):
    from benchmarks.agreement import _kappa_rows
    import pandas as pd

    def kappa(a_answers, b_answers):
        items = pd.DataFrame({"annotator": ["a"] * 4 + ["b"] * 4, "layout_id": ["L1", "L1", "L2", "L2"] * 2,
                              "o": ["x", "y"] * 4, "v": a_answers + b_answers})
        return next(r for r in _kappa_rows(items, ["o"], "v", "t", FAST) if r["measure"] == "cohen_kappa")["value"]

    # Both always "yes": chance agreement is 1, so kappa is undefined (0 / 0), not 1.
    assert kappa(["yes"] * 4, ["yes"] * 4) is None
    # Always "yes" against always "no": observed 0, chance 0, kappa 0.
    assert kappa(["yes"] * 4, ["no"] * 4) == 0.0


def test_an_object_listed_twice_or_labelled_twice_is_refused(tmp_path):
    scores = scores_file(tmp_path)
    lines = scores.read_text().splitlines()
    record = json.loads(lines[0])
    record["instances"].append(dict(record["instances"][0]))
    (tmp_path / "dup.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    labels = labels_file(tmp_path / "alice.json", "alice", ALICE)
    with pytest.raises(InputError, match=r"dup\.jsonl:1, field 'instances\[2\]\.object_id': 'a' is listed twice"):
        agreement(tmp_path / "dup.jsonl", [labels], tmp_path / "o1", bootstrap=FAST, plot=False)
    # The same candidate spelled two ways by one annotator is one candidate answered twice.
    data = json.loads(labels.read_text())
    again = dict(data["objects"][0], image="./" + data["objects"][0]["image"], label="no")
    data["objects"].append(again)
    (tmp_path / "twice.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"twice\.json: objects\[\d\]: annotator 'alice' answers object .* again"):
        agreement(scores, [tmp_path / "twice.json"], tmp_path / "o2", bootstrap=FAST, plot=False)


def test_labels_collected_with_scores_shown_are_flagged(tmp_path):
    labels = labels_file(tmp_path / "alice.json", "alice", ALICE, site={"id": "s", "blind": False})
    result = agreement(scores_file(tmp_path), [labels], tmp_path / "o", bootstrap=FAST, plot=False)
    assert result.settings["site_blind"] is False
    assert "showed the scores" in result.settings["warnings"][0]


def test_bad_values_in_a_pick_table_name_the_file(tmp_path):
    from clis.pick import PickConfig

    bad = tmp_path / "bad.toml"
    bad.write_text('[pick]\nrank_by = "global"\n')
    with pytest.raises(InputError, match=r"bad\.toml: pick: --rank-by must be one of clis, clis_i"):
        PickConfig.from_file(bad)


def test_kappas_equal_scikit_learn_and_statsmodels_on_random_answers():
    from itertools import combinations

    import pandas as pd
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    from benchmarks.agreement import _kappa_rows

    rng = np.random.default_rng(3)
    answers = {name: rng.choice(["yes", "partly", "no"], size=40, p=[0.5, 0.2, 0.3]) for name in "abc"}
    answers["b"] = np.where(rng.random(40) < 0.7, answers["a"], answers["b"])  # b mostly agrees with a
    items = pd.DataFrame([{"annotator": name, "layout_id": f"L{i // 4}", "o": str(i), "v": v}
                          for name, values in answers.items() for i, v in enumerate(values)])
    rows = {(r["measure"], r["annotators"]): r["value"] for r in _kappa_rows(items, ["o"], "v", "t", FAST)}
    for a, b in combinations("abc", 2):
        assert rows[("cohen_kappa", f"{a} | {b}")] == pytest.approx(cohen_kappa_score(answers[a], answers[b]))
    table, _ = aggregate_raters(np.column_stack([answers[n] for n in "abc"]))
    assert rows[("fleiss_kappa", "a | b | c")] == pytest.approx(fleiss_kappa(table, method="fleiss"))
