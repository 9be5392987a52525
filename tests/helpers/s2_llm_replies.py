"""A scripted "model" for the LLM planner's tests and benchmark: reads what the planner asked and answers it."""
from __future__ import annotations

import json

from tests.helpers.llm_server import Reply


def kind(body: dict) -> str:
    system = body["messages"][0]["content"]
    if "photo settings" in system:
        return "scenes"
    if "real-world sizes" in system:
        return "ratios"
    return "layout"


def asked_objects(body: dict) -> list[dict]:
    """The object list of the last user message: [{"name", "label"}] (layout) or [label] (others)."""
    text = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""
    for msg in reversed(body["messages"]):
        if msg["role"] == "user" and "Objects (JSON" in msg["content"]:
            text = msg["content"]
            break
    line = next(ln for ln in text.splitlines() if ln.startswith("Objects (JSON"))
    return json.loads(line.split(": ", 1)[1])


def good_boxes(n: int, frame: int = 512) -> list[list[int]]:
    """Side by side on a ground line, each above the minimum area, no overlap."""
    w = min(150, (frame - 20) // n - 8)
    h = max(150, int((frame / 5) ** 2 / w) + 2)
    return [[10 + i * (w + 8), frame - 40 - h, w, h] for i in range(n)]


def good_content(body: dict) -> str:
    k = kind(body)
    if k == "scenes":
        return json.dumps({"scenes": ["in the garden", "on a sunny lawn", "in a sunny park"]})
    objs = asked_objects(body)
    if k == "ratios":
        return json.dumps({"ratios": [{"name": lab, "ratio": 1.0 - 0.3 * i} for i, lab in enumerate(objs)]})
    boxes = good_boxes(len(objs))
    return json.dumps({"objects": [{"name": o["name"], "box": b} for o, b in zip(objs, boxes)],
                       "background_prompt": "a sunny garden with a lawn"})


def good(body: dict, n: int = 0) -> Reply:
    return Reply(good_content(body))
