"""Every text the VLM judges send, as plain templates (they go verbatim into the manifest).

Written for CLIS; the wording is ours. ``{caption}``, ``{phrase}`` and ``{box}`` are filled with
:func:`fill`, which never reads other braces: a caption that holds ``{x}`` stays as written.
"""

from __future__ import annotations

# --- acp: the VLM describes, the rater compares ------------------------------------------------
DESCRIBE_IMAGE = (
    "Describe this image in at most 50 words. Name every object you see with its colour, shape "
    "and texture, say where the objects are relative to each other, and what they are doing."
)
DESCRIBE_BOX = (
    "Look only at the region {box} of this image. In at most 50 words, describe the object in that "
    "region: what it is, its colour, shape and texture, and what it is doing."
)
DESCRIBE_CROP = (
    "In at most 50 words, describe the main object of this picture: what it is, its colour, shape "
    "and texture, and what it is doing."
)
RATER_SYSTEM = "You check whether a description of a picture agrees with the text the picture was made from."
RATER_USER = (
    "Text the picture was made from: {intended}\n"
    "Description of the picture: {description}\n\n"
    "How well does the description agree with the text? 0 means it shows something else entirely, "
    "5 means everything in the text is there as written. Answer with JSON only, in this form: "
    '{{"score": <an integer from 0 to 5>, "explanation": "<one short sentence>"}}'
)
# What the guided rater's answer begins with: the model only picks the digit that follows.
RATER_GUIDED_PREFIX = '{"score": '

# --- vqa: one yes/no question per term ---------------------------------------------------------
ASK_IMAGE = 'Does this image show "{caption}"? Answer yes or no.'
ASK_BOX = 'Does the region {box} of this image show "{phrase}"? Answer yes or no.'
ASK_CROP = 'Does this picture show "{phrase}"? Answer yes or no.'


def fill(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` replaced by its value, and ``{{``/``}}`` made single braces.

    >>> fill('Does it show "{phrase}"? {{"a": 1}}', phrase="a {red} cup")
    'Does it show "a {red} cup"? {"a": 1}'
    """
    out, i = [], 0
    while i < len(template):
        if template.startswith("{{", i) or template.startswith("}}", i):
            out.append(template[i])
            i += 2
            continue
        if template[i] == "{":
            end = template.index("}", i)
            out.append(values[template[i + 1 : end]])
            i = end + 1
            continue
        out.append(template[i])
        i += 1
    return "".join(out)


def manifest(judge: str) -> dict[str, str]:
    """The templates a judge sends, by name."""
    if judge == "acp":
        return {"describe_image": DESCRIBE_IMAGE, "describe_box": DESCRIBE_BOX, "describe_crop": DESCRIBE_CROP,
                "rater_system": RATER_SYSTEM, "rater_user": RATER_USER, "rater_guided_prefix": RATER_GUIDED_PREFIX}
    return {"ask_image": ASK_IMAGE, "ask_box": ASK_BOX, "ask_crop": ASK_CROP}
