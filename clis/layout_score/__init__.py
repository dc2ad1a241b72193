"""CLIS-L: is a layout plausible? Judged by a language model and by a pool of real layouts.

>>> from clis.layout_score import LayoutScoreConfig
>>> LayoutScoreConfig(llm="none", pool="pool.jsonl").weights.llm
0.5

See ``docs/clis-l.md`` for the formulas, the pool format and the calibration.
"""

from clis.layout_score.scorer import LayoutScore, LayoutScoreConfig, LayoutScorer, LayoutWeights, combine

__all__ = ["LayoutScore", "LayoutScoreConfig", "LayoutScorer", "LayoutWeights", "combine"]
