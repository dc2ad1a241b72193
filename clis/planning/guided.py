"""Guided planning for small local LMs: the model answers one small question at a time.

A 135M model (the embedded SmolLM2) cannot write a whole scene graph as JSON: it drops keys,
echoes the example or breaks the syntax. Here the program owns the structure and asks the
model only what it can answer:

1. **Sizes** -- each object's size word (small / medium / large) is *chosen* by comparing the
   LM's log-likelihood of each option (see :meth:`GuidedPlanner.choose`). The largest object
   becomes the anchor that the others are placed against.
2. **Relations** -- for every other object, one relation to the anchor from :data:`RELATIONS`,
   in either direction, chosen the same way from 2 x 10 candidate sentences scored in one batch.
3. **Position** -- the anchor's horizontal (left / center / right) and vertical
   (top / middle / bottom) position words, chosen the same way.
4. **Attributes** -- a short sampled completion per object, cleaned to 1-2 words.
5. **Caption** -- a short sampled sentence from the chosen phrases; a caption that misses an
   object is retried with a new seed, and after the last try repaired by appending the missing
   objects (reported in the notes).

Choices are ranked by pointwise mutual information: ``log P(option | prompt about the cat) -
log P(option | same prompt about "a thing")``, so an option does not win only because it is a
frequent phrase. The option is then *sampled* from ``softmax(pmi / temperature)`` with a seeded
generator, so drafts differ; temperature 0 takes the best option. Boxes are computed from the
chosen words by :func:`layout_boxes` (plain geometry, seeded jitter).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clis.layout_score.llm import LogLikelihoodScorer, with_article
from clis.planning.parse import clamp_box, names_object

# Relation -> how the subject box sits against the object box: the subject's point
# (fx, fy) (fractions of its own box) lies at the object's point (gx, gy) plus (dx, dy).
# One rule serves both directions, because it is a linear equation in the two boxes.
RELATIONS: dict[str, tuple[float, float, float, float, float, float]] = {
    "on": (0.5, 1.0, 0.5, 0.3, 0.0, 0.0),  # bottom centre rests on the upper part of the object
    "above": (0.5, 1.0, 0.5, 0.0, 0.0, -0.02),  # bottom centre just over the object's top
    "under": (0.5, 1.0, 0.5, 1.0, 0.0, 0.0),  # same floor line, below the object's top
    "below": (0.5, 0.0, 0.5, 1.0, 0.0, 0.02),  # top centre just under the object's bottom
    "next to": (0.0, 1.0, 1.0, 1.0, 0.03, 0.0),  # side by side, bottoms aligned
    "beside": (1.0, 1.0, 0.0, 1.0, -0.03, 0.0),  # side by side on the other side
    "behind": (0.5, 1.0, 0.7, 0.8, 0.0, 0.0),  # farther away: higher floor line, offset
    "in front of": (0.5, 1.0, 0.4, 1.0, 0.0, 0.04),  # nearer: lower floor line
    "holding": (0.7, 0.5, 0.5, 0.5, 0.0, 0.0),  # the subject's hand (right, mid-height) at the object
    "riding": (0.5, 1.0, 0.5, 0.5, 0.0, 0.0),  # subject's bottom at the object's middle
}
SIZES = {"small": 0.2, "medium": 0.38, "large": 0.62}  # side of the box, fraction of the canvas
HORIZONTAL = {"left": 0.3, "center": 0.5, "right": 0.7}  # anchor centre x
VERTICAL = {"top": 0.35, "middle": 0.55, "bottom": 0.7}  # anchor centre y
_SIZE_PHRASES = {"small": " small", "medium": " medium-sized", "large": " large"}
_HORIZONTAL_PHRASES = {"left": " on the left side", "center": " in the center", "right": " on the right side"}
_VERTICAL_PHRASES = {"top": " near the top", "middle": " in the middle", "bottom": " near the bottom"}
RELATION_NEUTRAL_WEIGHT = 0.5
JITTER = 0.04  # seeded shift of every placement so that drafts differ
# Few-shot patterns for the two free-text steps; the examples use other objects than most sets.
_ATTRIBUTE_PROMPT = "Objects and how they look:\napple: a red apple\ntable: a wooden table\ndog: a fluffy dog\n"
_CAPTION_PROMPT = (
    "Scene: a red cup on the table\nCaption: A red cup stands on a wooden table in a sunny kitchen.\n\n"
    "Scene: a man riding the horse\nCaption: A man rides a brown horse across a green field.\n\n"
)
_STOP_WORDS = {"a", "an", "the", "one", "word", "is", "it", "and", "of", "very", "this", "that", "its", "with"}


@dataclass
class GuidedObject:
    id: str
    label: str
    size: str = "medium"
    attributes: tuple[str, ...] = ()


def _box_at(point_x: float, point_y: float, fx: float, fy: float, w: float, h: float) -> list[float]:
    return [point_x - fx * w, point_y - fy * h, w, h]


def place(relation: str, subject_size: tuple[float, float], object_box: Sequence[float] | None = None,
          subject_box: Sequence[float] | None = None, object_size: tuple[float, float] | None = None) -> list[float]:
    """The box of one side of ``subject RELATION object`` given the other side's box.

    With ``object_box`` the subject's box (of ``subject_size``) is returned; with
    ``subject_box`` the object's box (of ``object_size``).

    >>> place("on", (0.2, 0.2), object_box=[0.1, 0.5, 0.8, 0.4])   # cup on table
    [0.4, 0.42, 0.2, 0.2]
    >>> place("on", None, subject_box=[0.4, 0.42, 0.2, 0.2], object_size=(0.8, 0.4))
    [0.1, 0.5, 0.8, 0.4]
    """
    fx, fy, gx, gy, dx, dy = RELATIONS[relation]
    if object_box is not None:
        ox, oy, ow, oh = object_box
        w, h = subject_size
        box = _box_at(ox + gx * ow + dx, oy + gy * oh + dy, fx, fy, w, h)
    else:
        sx, sy, sw, sh = subject_box
        w, h = object_size
        box = _box_at(sx + fx * sw - dx, sy + fy * sh - dy, gx, gy, w, h)
    return [round(v, 6) for v in box]


def fit_to_canvas(boxes: dict[str, list[float]]) -> dict[str, list[float]]:
    """Shift (and if needed shrink about the group's centre) all boxes to fit the unit canvas.

    The group is moved as one so that the relations between boxes survive.

    >>> fit_to_canvas({"a": [0.8, 0.2, 0.4, 0.2], "b": [0.3, 0.1, 0.1, 0.1]})   # shifted left by 0.2
    {'a': [0.6, 0.2, 0.4, 0.2], 'b': [0.1, 0.1, 0.1, 0.1]}
    """
    x0 = min(b[0] for b in boxes.values())
    y0 = min(b[1] for b in boxes.values())
    x1 = max(b[0] + b[2] for b in boxes.values())
    y1 = max(b[1] + b[3] for b in boxes.values())
    scale = min(1.0, 1.0 / max(x1 - x0, 1e-9), 1.0 / max(y1 - y0, 1e-9))
    # After scaling about (x0, y0), the group spans [0, scale*(x1-x0)]: shift so it lies inside
    # the canvas and moves as little as possible.
    width, height = (x1 - x0) * scale, (y1 - y0) * scale
    new_x0 = min(max(x0, 0.0), 1.0 - width)
    new_y0 = min(max(y0, 0.0), 1.0 - height)
    fitted = {}
    for key, (x, y, w, h) in boxes.items():
        fitted[key] = [round(new_x0 + (x - x0) * scale, 6), round(new_y0 + (y - y0) * scale, 6),
                       round(w * scale, 6), round(h * scale, 6)]
    return fitted


def layout_boxes(objects: Sequence[GuidedObject], anchor: str, horizontal: str, vertical: str,
                 relations: Sequence[dict[str, Any]], rng: random.Random | None = None) -> dict[str, list[float]]:
    """Boxes from size words, the anchor's position words and relations to the anchor.

    Every object other than the anchor must appear in exactly one relation with the anchor.
    ``rng`` adds seeded jitter (aspect ratio and position); without it the result is exact.

    >>> objs = [GuidedObject("table-1", "table", "large"), GuidedObject("cup-1", "cup", "small")]
    >>> rel = [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}]
    >>> layout_boxes(objs, "table-1", "center", "bottom", rel)   # table bottom 1.01: all up by 0.01
    {'table-1': [0.19, 0.38, 0.62, 0.62], 'cup-1': [0.4, 0.366, 0.2, 0.2]}
    """
    def jitter() -> float:
        return rng.uniform(-JITTER, JITTER) if rng else 0.0

    sizes = {}
    for o in objects:
        side = SIZES[o.size]
        aspect = math.exp(rng.uniform(-0.25, 0.25)) if rng else 1.0  # w / h
        sizes[o.id] = (side * math.sqrt(aspect), side / math.sqrt(aspect))
    aw, ah = sizes[anchor]
    boxes = {anchor: [HORIZONTAL[horizontal] + jitter() - aw / 2, VERTICAL[vertical] + jitter() - ah / 2, aw, ah]}
    for relation in relations:
        subject, obj = relation["subject"][0], relation["object"][0]
        if subject == anchor:
            box = place(relation["relation"], None, subject_box=boxes[anchor], object_size=sizes[obj])
            placed = obj
        else:
            box = place(relation["relation"], sizes[subject], object_box=boxes[anchor])
            placed = subject
        boxes[placed] = [box[0] + jitter(), box[1] + jitter() / 2, box[2], box[3]]
    return fit_to_canvas({o.id: [round(v, 6) for v in boxes[o.id]] for o in objects})


def clean_attribute(text: str, label: str) -> list[str]:
    """The first one or two descriptive words of a completion, without the label itself.

    >>> clean_attribute(" Fluffy, grey and soft.", "cat"), clean_attribute("The cat", "cat")
    (['fluffy'], [])
    """
    words = re.findall(r"[a-z]+(?:-[a-z]+)?", text.lower().split("\n")[0])
    label_words = set(label.lower().split()) | {label.lower() + "s"}
    kept = []
    for word in words[:4]:
        # "bluebird" for a bird would hide the label from the caption check (whole words).
        if word in _STOP_WORDS or word in label_words or len(word) < 3 or label.lower() in word:
            if kept:
                break
            continue
        kept.append(word)
        if len(kept) == 2 or "," in text:
            break
    return kept[:1] if len(kept) == 2 and "," in text else kept


def _softmax_pick(scores: Sequence[float], temperature: float, rng: random.Random) -> int:
    if temperature <= 0:
        return max(range(len(scores)), key=lambda i: scores[i])
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    return rng.choices(range(len(scores)), weights=weights)[0]


class GuidedPlanner:
    """Plans one layout by many small LM questions (see the module text).

    ``chat`` is a :class:`~clis.planning.backends.TransformersChatBackend`; its model also
    scores the options. ``temperature`` is the sampling temperature of choices and texts.
    """

    mode = "guided"

    def __init__(self, chat, temperature: float = 0.7, caption_tokens: int = 40, batch_size: int = 32):
        self.chat_backend = chat
        self.temperature = temperature
        self.caption_tokens = caption_tokens
        self.log_likelihood = LogLikelihoodScorer(
            chat.loaded.model, chat.tokenizer, batch_size=batch_size, device=chat.loaded.device
        )

    def describe(self) -> dict[str, Any]:
        return {**self.chat_backend.describe(), "mode": "guided", "relations": list(RELATIONS)}

    # -- the three kinds of question -------------------------------------------------------
    def choose(self, queries: Sequence[tuple[str, str]], neutral: Sequence[tuple[str, str]] | None,
               rng: random.Random, neutral_weight: float = 1.0) -> tuple[int, list[float]]:
        """Pick one of several (context, continuation) options.

        Each option scores ``log P(query) - neutral_weight * log P(neutral)`` (PMI when the
        weight is 1; no correction without ``neutral``) and is sampled from their softmax.
        """
        scores = self.log_likelihood([*queries, *(neutral or [])])
        if neutral:
            scores = [a - neutral_weight * b for a, b in zip(scores[: len(queries)], scores[len(queries):])]
        return _softmax_pick(scores, self.temperature, rng), scores

    def complete(self, prompt: str, seed: int, max_new_tokens: int) -> str:
        """A sampled plain-text continuation of ``prompt``, up to the end of its line.

        Plain few-shot text, not the chat template: a 135M model continues a pattern it has
        just seen far more reliably than it follows an instruction.
        """
        import torch

        backend = self.chat_backend
        tokenizer = backend.tokenizer
        inputs = {k: v.to(backend.loaded.device) for k, v in tokenizer(prompt, return_tensors="pt").items()}
        torch.manual_seed(seed)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        sample = self.temperature > 0
        with torch.inference_mode():
            output = backend.loaded.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=pad,
                temperature=self.temperature if sample else None, top_p=0.9 if sample else None,
            )  # fmt: skip
        text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return text.split("\n")[0]

    # -- the steps -------------------------------------------------------------------------
    def choose_size(self, label: str, rng: random.Random) -> tuple[str, float]:
        """A size word, and how much likelier "large" is than "small" (to pick the anchor).

        Scored against the same question about "a thing": raw answers were "small" for almost
        everything, and a PMI on a plain sentence ("a cat usually looks ...") made almost
        everything "medium-sized".
        """
        words = list(SIZES)
        question = "Question: Is {} small, medium-sized or large?\nAnswer: It is"
        queries = [(question.format(with_article(label)), _SIZE_PHRASES[w]) for w in words]
        neutral = [(question.format("a thing"), _SIZE_PHRASES[w]) for w in words]
        index, _ = self.choose(queries, neutral, rng)
        # The anchor is ranked by a two-way question: it separated SmolLM2's objects better
        # (sofa > cat, table > cup, branch > bird) than the three-way one.
        two_way = f"Question: Is {with_article(label)} small or large?\nAnswer: It is"
        small, large = self.log_likelihood([(two_way, " small"), (two_way, " large")])
        return words[index], large - small

    def choose_relation(self, subject: GuidedObject, anchor: GuidedObject, rng: random.Random) -> dict[str, Any]:
        options = [(rel, a, b) for rel in RELATIONS for a, b in ((subject, anchor), (anchor, subject))]
        queries = [(f"A photo of {with_article(a.label)}", f" {rel} the {b.label}.") for rel, a, b in options]
        neutral = [("A photo of a thing", f" {rel} the other thing.") for rel, _, _ in options]
        # Half a PMI: full PMI over-rewards rare verbs ("sofa riding cat"), none favours "on"
        # for everything (docs/pipeline.md).
        rel, a, b = options[self.choose(queries, neutral, rng, neutral_weight=RELATION_NEUTRAL_WEIGHT)[0]]
        return {"subject": [a.id], "relation": rel, "object": [b.id]}

    def choose_position(self, label: str, rng: random.Random) -> tuple[str, str]:
        picked = []
        for phrases in (_HORIZONTAL_PHRASES, _VERTICAL_PHRASES):
            words = list(phrases)
            queries = [(f"In the photo, the {label} is", phrases[w] + ".") for w in words]
            neutral = [("In the photo, the thing is", phrases[w] + ".") for w in words]
            picked.append(words[self.choose(queries, neutral, rng)[0]])
        return picked[0], picked[1]

    def attributes(self, label: str, seed: int) -> list[str]:
        answer = self.complete(_ATTRIBUTE_PROMPT + f"{label}: a", seed, max_new_tokens=5)
        return clean_attribute(answer, label)

    def caption(self, phrases: list[str], labels: list[str], seed: int, tries: int,
                failures: list[dict[str, Any]]) -> tuple[str, list[str]]:
        """A caption naming every label: sampled, retried, finally repaired (noted)."""
        prompt = _CAPTION_PROMPT + f"Scene: {'; '.join(phrases)}\nCaption:"
        best, best_missing = "", len(labels) + 1  # the try that names the most objects is repaired
        for attempt in range(tries):
            attempt_seed = seed + attempt
            answer = self.complete(prompt, attempt_seed, self.caption_tokens)
            caption = _first_sentence(answer)
            missing = [label for label in dict.fromkeys(labels) if not names_object(caption, label)]
            if caption and not missing:
                return caption, []
            if caption and len(missing) < best_missing:
                best, best_missing = caption, len(missing)
            failures.append({
                "stage": "caption", "seed": attempt_seed, "answer": answer[:300],
                "error": "empty caption" if not caption else f"caption does not name: {', '.join(missing)}",
            })  # fmt: skip
        base = best.rstrip(".!? ") if best else phrases[0][0].upper() + phrases[0][1:]
        missing = [label for label in dict.fromkeys(labels) if not names_object(base, label)]
        repaired = base + (", with " + " and ".join(with_article(m) for m in missing) if missing else "") + "."
        return repaired, [f"caption repaired: appended {', '.join(missing)}"] if missing else []

    # -- one draft ---------------------------------------------------------------------------
    def plan(self, object_ids: list[str], labels: dict[str, str], seed: int, tries: int) -> dict[str, Any]:
        """Scene graph, boxes, notes, clamping notes and failed attempts for one draft."""
        rng = random.Random(seed)
        objects = [GuidedObject(i, labels[i]) for i in object_ids]
        largeness = {}
        for o in objects:
            o.size, largeness[o.id] = self.choose_size(o.label, rng)
        anchor = max(objects, key=lambda o: largeness[o.id])  # the others are placed against it
        # SmolLM2's size words barely separate objects (most come out "medium"), but its
        # large-vs-small preference ranks them well: the anchor is drawn large and nothing
        # else larger than medium, so the objects placed on or beside it fit.
        for o in objects:
            o.size = "large" if o is anchor else ("medium" if o.size == "large" else o.size)
        relations = [self.choose_relation(o, anchor, rng) for o in objects if o is not anchor]
        horizontal, vertical = self.choose_position(anchor.label, rng)
        for k, o in enumerate(objects):
            o.attributes = tuple(self.attributes(o.label, seed * 31 + k))
        phrase = {o.id: " ".join([*o.attributes, o.label]) for o in objects}
        if relations:
            phrases = [f"{with_article(phrase[r['subject'][0]])} {r['relation']} the {labels[r['object'][0]]}"
                       for r in relations]
        else:
            phrases = [with_article(phrase[anchor.id])]
        failures: list[dict[str, Any]] = []
        caption, notes = self.caption(phrases, [o.label for o in objects], seed * 7919 + 1, tries, failures)
        boxes = layout_boxes(objects, anchor.id, horizontal, vertical, relations, rng)
        clamped = []
        for object_id, box in boxes.items():
            fixed = clamp_box(box)
            if any(abs(a - b) > 1e-6 for a, b in zip(box, fixed)):
                clamped.append(f"{object_id}: box {box} clamped to the canvas as {fixed}")
            boxes[object_id] = fixed
        notes.append(f"anchor {anchor.id} ({horizontal}, {vertical}); sizes "
                     + ", ".join(f"{o.id}={o.size}" for o in objects))
        scene = {
            "caption": caption,
            "objects": [{"id": o.id, "label": o.label, "attributes": list(o.attributes), "bbox": boxes[o.id]}
                        for o in objects],
            "relations": relations,
        }
        return {"scene": scene, "notes": notes, "clamped": clamped, "failures": failures}


def _first_sentence(answer: str) -> str:
    text = " ".join(answer.replace("\n", " ").split()).strip(" \"'")
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= 300 else ""
