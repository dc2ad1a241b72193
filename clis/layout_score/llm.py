"""LLM plausibility: put a box pair's geometry into words and ask a language model which
version of the words it finds more likely, the one the layout draws or its counterfactual.

Only the object labels and the boxes reach the model; the caption never does, so two layouts
with the same caption but different boxes get different scores.

Two aspects of a pair are verbalised (see ``docs/clis-l.md`` for why these two):

* **vertical** -- when one centre is clearly higher than the other, statements such as
  "The cup is above the table." are compared with the same sentence with the two names
  swapped ("The table is above the cup."). Both sentences hold the same words, labels
  keeping their own capitals ("An iPhone sits on a TV stand." / "A TV stand sits on an
  iPhone."; only articles follow their position), so their summed log-likelihoods are
  directly comparable and word frequency cancels out.
* **size** -- when one box is clearly larger, the model answers "Which is bigger, a cup or
  a table?" and "Which is smaller, a cup or a table?" (both orders of naming). The answer
  log-likelihoods of the bigger question minus those of the smaller question cancel the
  model's preference for a word or for the first-named option; what remains is its
  knowledge of size. Plain size statements were near chance with SmolLM2-135M.

Each comparison gives a log-odds ``delta = log P(as drawn) - log P(counterfactual)``; an
aspect's log-odds is the mean over its templates, and its score is ``100 * sigmoid(delta)``
-- the model's probability that the drawn version is the true one, given that one of the
two is. 50 means no preference, 100 a strong preference for the layout as drawn.

Example:
    >>> from clis.layout_score.llm import verbalise_pair
    >>> aspects = verbalise_pair("cup", "table", (0.4, 0.3, 0.2, 0.2), (0.1, 0.5, 0.8, 0.5))
    >>> [a.name for a in aspects]
    ['vertical', 'size']
    >>> aspects[0].statement, aspects[0].counterfactual
    ('The cup is above the table.', 'The table is above the cup.')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

STATEMENT_CONTEXT = "Common sense facts about the world:\n"

# "{upper} ... {lower}": sentences that are true of the higher object and false when swapped.
# Templates phrased from the lower object ("the table is under the cup") were left out: with
# SmolLM2 they preferred the swapped sentence as often as not (see docs/clis-l.md).
VERTICAL_TEMPLATES = (
    "The {upper} is above the {lower}.",
    "The {upper} is on top of the {lower}.",
    "There is {a_upper} on the {lower}.",
    "The {upper} is over the {lower}.",
    "{A_upper} sits on {a_lower}.",
)

# (question about the bigger one, question about the smaller one); "{x}"/"{y}" take both orders.
SIZE_QUESTIONS = (
    ("Which is bigger, {a_x} or {a_y}?", "Which is smaller, {a_x} or {a_y}?"),
    ("Which one is larger: {x} or {y}?", "Which one is smaller: {x} or {y}?"),
)
QUESTION_FORMAT = "Question: {question}\nAnswer:"

ASPECT_WEIGHTS = {"vertical": 1.0, "size": 1.0}

# A query is (context, continuation); only the continuation's tokens are scored.
Query = tuple[str, str]


def with_article(label: str) -> str:
    """``"a cup"``, ``"an apple"``; labels that do not start with a Latin letter get ``"a"``."""
    return f"{'an' if label[:1].lower() in 'aeiou' and label[:1] else 'a'} {label}"


@dataclass
class Comparison:
    """One template: ``log-odds = sum(weight * log P(continuation | context))``."""

    template: str
    terms: list[tuple[float, Query]]
    text: str = ""
    counterfactual: str = ""
    log_odds: Optional[float] = None


@dataclass
class Aspect:
    """One verbalised property of a pair and the comparisons that test it."""

    name: str
    statement: str
    counterfactual: str
    comparisons: list[Comparison] = field(default_factory=list)
    log_odds: Optional[float] = None
    score: Optional[float] = None

    def to_dict(self) -> dict:
        return {
            "aspect": self.name,
            "statement": self.statement,
            "counterfactual": self.counterfactual,
            "templates": [
                {"text": c.text, "counterfactual": c.counterfactual,
                 "log_odds": None if c.log_odds is None else round(c.log_odds, 4)}
                for c in self.comparisons
            ],
            "log_odds": None if self.log_odds is None else round(self.log_odds, 4),
            "score": None if self.score is None else round(self.score, 4),
        }


def capitalise_first(text: str) -> str:
    """Upper-case only the first character: ``str.capitalize`` would lower-case the rest
    ("a TV stand" -> "A tv stand"), so a sentence and its name-swapped twin would no longer
    hold the same tokens."""
    return text[:1].upper() + text[1:]


def _fill(template: str, **names: str) -> str:
    values = dict(names)
    for key, label in names.items():
        values[f"a_{key}"] = with_article(label)
        values[f"A_{key}"] = capitalise_first(with_article(label))
    return template.format(**values)


def vertical_aspect(upper: str, lower: str) -> Aspect:
    """Statements that ``upper`` is higher than ``lower``, each against its name-swapped twin."""
    comparisons = []
    for template in VERTICAL_TEMPLATES:
        text, counter = _fill(template, upper=upper, lower=lower), _fill(template, upper=lower, lower=upper)
        comparisons.append(Comparison(template, [(1.0, (STATEMENT_CONTEXT, text)), (-1.0, (STATEMENT_CONTEXT, counter))],
                                      text, counter))
    return Aspect("vertical", f"The {upper} is above the {lower}.", f"The {lower} is above the {upper}.", comparisons)


def size_aspect(bigger: str, smaller: str) -> Aspect:
    """Questions that contrast "which is bigger" with "which is smaller", both naming orders."""
    comparisons = []
    for big_question, small_question in SIZE_QUESTIONS:
        for x, y in ((bigger, smaller), (smaller, bigger)):
            big_q = QUESTION_FORMAT.format(question=_fill(big_question, x=x, y=y))
            small_q = QUESTION_FORMAT.format(question=_fill(small_question, x=x, y=y))
            # Halved: the two questions each give one log-odds; their contrast counts twice.
            terms = [(0.5, (big_q, f" {bigger}")), (-0.5, (big_q, f" {smaller}")),
                     (-0.5, (small_q, f" {bigger}")), (0.5, (small_q, f" {smaller}"))]
            comparisons.append(Comparison(big_question, terms, f"{big_q} {bigger}", f"{big_q} {smaller}"))
    return Aspect("size", f"The {bigger} is bigger than the {smaller}.",
                  f"The {smaller} is bigger than the {bigger}.", comparisons)


def verbalise_pair(subject: str, obj: str, subject_box: Sequence[float], object_box: Sequence[float],
                   vertical_margin: float = 0.05, size_ratio: float = 2.0) -> list[Aspect]:
    """The aspects a pair's geometry asserts, as statements against counterfactuals.

    ``vertical`` when the centres differ by at least ``vertical_margin`` of the canvas height;
    ``size`` when one box's area is at least ``size_ratio`` times the other's. Pairs with the
    same label assert nothing a swap could change and give no aspects.
    """
    if subject.strip().lower() == obj.strip().lower():
        return []
    aspects = []
    sx, sy, sw, sh = subject_box
    ox, oy, ow, oh = object_box
    dy = (oy + oh / 2) - (sy + sh / 2)  # > 0: the subject is higher (image y grows downwards)
    if abs(dy) >= vertical_margin:
        aspects.append(vertical_aspect(subject, obj) if dy > 0 else vertical_aspect(obj, subject))
    subject_area, object_area = sw * sh, ow * oh
    if subject_area >= size_ratio * object_area:
        aspects.append(size_aspect(subject, obj))
    elif object_area >= size_ratio * subject_area:
        aspects.append(size_aspect(obj, subject))
    return aspects


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class LogLikelihoodScorer:
    """Batched ``log P(continuation | context)`` from a causal LM, with a cache across calls.

    Queries are sorted by length so each batch pads little; right padding with an attention
    mask keeps every real token's log-probability identical to scoring it alone.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 32, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = 0 if pad is None else int(pad)
        self.cache: dict[Query, float] = {}

    def _encode(self, query: Query) -> tuple[list[int], int]:
        context, continuation = query
        context_ids = self.tokenizer(context, add_special_tokens=True).input_ids
        continuation_ids = self.tokenizer(continuation, add_special_tokens=False).input_ids
        if not context_ids:
            context_ids = [self.pad_id]  # something to predict the first continuation token from
        return context_ids + continuation_ids, len(context_ids)

    @torch.no_grad()
    def __call__(self, queries: Sequence[Query], on_batch: Optional[Callable[[int], None]] = None) -> list[float]:
        todo = list(dict.fromkeys(q for q in queries if q not in self.cache))
        encoded = {q: self._encode(q) for q in todo}
        todo.sort(key=lambda q: len(encoded[q][0]))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            longest = max(len(encoded[q][0]) for q in batch)
            ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, query in enumerate(batch):
                tokens = encoded[query][0]
                ids[row, :len(tokens)] = torch.tensor(tokens)
                mask[row, :len(tokens)] = 1
            # Position i predicts token i + 1; only the continuation's positions are needed.
            rows, positions = [], []
            for row, query in enumerate(batch):
                tokens, context_length = encoded[query]
                rows += [row] * (len(tokens) - context_length)
                positions += range(context_length - 1, len(tokens) - 1)
            rows_t, positions_t = torch.tensor(rows), torch.tensor(positions)
            logits = self._logits_at(ids.to(self.device), mask.to(self.device), rows_t, positions_t)
            targets = ids[rows_t, positions_t + 1].to(logits.device)
            token_log_probs = logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0].cpu()
            sums = torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows_t, token_log_probs.double())
            for row, query in enumerate(batch):
                self.cache[query] = float(sums[row])
            if on_batch is not None:
                on_batch(len(batch))
        return [self.cache[q] for q in queries]

    def _logits_at(self, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
                   positions: torch.Tensor) -> torch.Tensor:
        """Logits at ``(rows, positions)``, shape ``[K, vocab]``.

        The output projection is most of a small LM's cost (49k-word vocabulary, 576-wide
        SmolLM2), so when the model is a plain decoder + linear head only the needed positions
        are projected. Models that post-process logits (soft-capping, scaling) take the full path.
        """
        head = self.model.get_output_embeddings()
        config = self.model.config
        plain_head = (
            isinstance(head, torch.nn.Linear)
            and getattr(config, "final_logit_softcapping", None) is None
            and getattr(config, "logit_scale", None) is None
            and self.model.base_model is not self.model
        )
        if plain_head:
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            return head(hidden[rows.to(hidden.device), positions.to(hidden.device)]).float()
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        return logits[rows.to(logits.device), positions.to(logits.device)].float()

    def pending(self, queries: Sequence[Query]) -> int:
        """How many distinct queries are not cached yet (for progress bars)."""
        return len({q for q in queries if q not in self.cache})


def resolve_aspects(aspects: Sequence[Aspect], log_likelihood: Callable[[Sequence[Query]], list[float]]) -> None:
    """Fill ``log_odds`` and ``score`` of every aspect, scoring all their queries in one call."""
    queries = [query for aspect in aspects for comparison in aspect.comparisons for _, query in comparison.terms]
    values = dict(zip(queries, log_likelihood(queries)))
    for aspect in aspects:
        for comparison in aspect.comparisons:
            comparison.log_odds = sum(weight * values[query] for weight, query in comparison.terms)
        aspect.log_odds = sum(c.log_odds for c in aspect.comparisons) / len(aspect.comparisons)
        aspect.score = 100.0 * sigmoid(aspect.log_odds)


def pair_llm_score(aspects: Sequence[Aspect]) -> Optional[float]:
    """Weighted mean of a pair's aspect scores (``ASPECT_WEIGHTS``); None without aspects."""
    scored = [a for a in aspects if a.score is not None]
    if not scored:
        return None
    total = sum(ASPECT_WEIGHTS[a.name] for a in scored)
    return sum(ASPECT_WEIGHTS[a.name] * a.score for a in scored) / total
