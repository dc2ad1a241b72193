"""The two prompts of the ACP planner: scene graph first, then boxes.

Like the Auto Cherry-Picker pipeline, the model first decides *what* the scene is (attributes,
relations, a caption naming every object) and only then *where* things go, with the scene
graph in front of it. Each prompt carries a worked example: small models copy the shape of an
example far more reliably than they follow a schema description.
"""

from __future__ import annotations

import json

SYSTEM = (
    "You design realistic photographs for a training dataset. "
    "Answer with one JSON object and nothing else."
)

_SCENE_EXAMPLE_IDS = ["cup-1", "table-1"]
# The caption comes first: small models that ramble lose the keys at the end of the object.
_SCENE_EXAMPLE = {
    "caption": "A red ceramic cup stands on a wooden table.",
    "objects": [
        {"id": "cup-1", "attributes": ["red", "ceramic"]},
        {"id": "table-1", "attributes": ["wooden"]},
    ],
    "relations": [{"subject": ["cup-1"], "relation": "on", "object": ["table-1"]}],
}
_LAYOUT_EXAMPLE = {"boxes": {"cup-1": [0.42, 0.3, 0.16, 0.2], "table-1": [0.05, 0.45, 0.9, 0.5]}}


def scene_graph_messages(object_ids: list[str]) -> list[dict[str, str]]:
    user = (
        f"Objects: {', '.join(_SCENE_EXAMPLE_IDS)}\n"
        f"Scene graph: {json.dumps(_SCENE_EXAMPLE)}\n\n"
        f"Objects: {', '.join(object_ids)}\n"
        "Write the scene graph for these objects in the same JSON form: a caption of one or two "
        "sentences that names every object; every object id exactly as given, with a few visual "
        "attributes; and relations between the objects.\nScene graph:"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def layout_messages(scene: dict) -> list[dict[str, str]]:
    """Prompt for the boxes; ``scene`` is a parsed scene graph (objects, relations, caption)."""
    described = "; ".join(
        f"{o['id']} ({' '.join([*o['attributes'], o['label']])})" for o in scene["objects"]
    )
    relations = "; ".join(
        f"{' and '.join(r['subject'])} {r['relation']} {' and '.join(r['object'])}" for r in scene["relations"]
    )
    user = (
        f"Caption: {_SCENE_EXAMPLE['caption']}\nObjects: cup-1 (red ceramic cup); table-1 (wooden table)\n"
        f"Relations: cup-1 on table-1\nLayout: {json.dumps(_LAYOUT_EXAMPLE)}\n\n"
        f"Caption: {scene['caption']}\nObjects: {described}\nRelations: {relations or 'none'}\n"
        "Give one box per object in the same JSON form. A box is [x, y, w, h]: x, y is its top-left "
        "corner and w, h its width and height, all as fractions of the image between 0 and 1. "
        "Sizes and positions should look like a real photo.\nLayout:"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
