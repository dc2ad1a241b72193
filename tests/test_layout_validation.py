"""CLIS-L with the embedded defaults on real layouts: the figures of docs/clis-l.md, section 9.

Slow: the default scorer loads SmolLM2 and MiniLM. The evaluation set is NSR-1K's
``"sub-type": "real"`` records (``../shared/data/nsr-1k``); nothing was chosen on it, so the
floors below are independent facts (the paper's 61.0% box-swap result, chance), not figures
read off this implementation. The issue's targets are printed next to what is reached.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clis.layout import Layout

NSR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nsr-1k" / "counting.val.json"
PAIRS_FILE = Path(__file__).parent / "data" / "layout_pairs.json"
PAPER_SWAP_WIN_RATE = 0.610  # Auto Cherry-Picker's CLIS-L, layout vs its box-swapped twin

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_scorer():
    from clis.layout_score import LayoutScoreConfig, LayoutScorer

    return LayoutScorer(LayoutScoreConfig(), cache=None)


@pytest.mark.skipif(not NSR.is_file(), reason="needs ../shared/data/nsr-1k")
def test_default_clis_l_on_real_coco_layouts(default_scorer, tmp_path):
    from benchmarks.layouts import layouts_study

    result = layouts_study(NSR, tmp_path / "out", scorer=default_scorer, subset=["sub-type=real"],
                           min_objects=2, max_objects=6, min_labels=2, plot=False)
    per = {row["corruption"]: row for row in result.tables["per_corruption"] if row["source"] == "clis_l"}
    real_pass = next(row for row in result.tables["threshold"]
                     if row["source"] == "clis_l" and row["group"] == "real")
    n = int(per["flip"]["n"])
    flip, swap = per["flip"]["win_rate"], per["swap"]["win_rate"]
    print(f"\nCLIS-L (embedded defaults) on {result.settings['n_selected']} real COCO layouts of NSR-1K:"
          f"\n  real beats box-swapped twin {swap:.1%} (target >= 75%, paper 61.0%)"
          f"\n  real beats vertical flip    {flip:.1%} [{per['flip']['ci_low']:.1%}, "
          f"{per['flip']['ci_high']:.1%}] (target >= 75%)"
          f"\n  real layouts >= 50          {real_pass['share']:.1%} (target >= 85%)"
          + "".join(f"\n  {c:<6} win {row['win_rate']:.1%}" for c, row in per.items() if c not in ("flip", "swap")))
    assert result.settings["n_selected"] >= 100 and n >= 100
    assert swap > PAPER_SWAP_WIN_RATE
    assert per["flip"]["ci_low"] > 0.5  # better than chance
    assert real_pass["share"] > 0.5


def test_default_clis_l_on_the_hand_made_pairs(default_scorer):
    pairs = json.loads(PAIRS_FILE.read_text(encoding="utf-8"))["pairs"]
    layouts = [Layout.model_validate(p[key]) for p in pairs for key in ("plausible", "implausible")]
    results = default_scorer.score_layouts(layouts)
    wins = {}
    for i, pair in enumerate(pairs):
        won = results[2 * i].clis_l > results[2 * i + 1].clis_l
        total = wins.setdefault(pair["kind"], [0, 0])
        total[0] += won
        total[1] += 1
    correct = sum(w for w, _ in wins.values())
    print(f"\ndefault CLIS-L on the hand-made pairs: {correct}/{len(pairs)} ({correct / len(pairs):.1%}); "
          + ", ".join(f"{k}: {w}/{n}" for k, (w, n) in wins.items()))
    # The LLM's weight (8) was chosen on these pairs (docs/clis-l.md, section 4): this guards it.
    assert correct / len(pairs) >= 0.85
